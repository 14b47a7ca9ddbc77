"""The import direction of docs/architecture.md, enforced: `lint-imports` runs the contracts
in pyproject.toml, and every top-level module must have a place in the layer contract."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import codex_trio

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(codex_trio.__file__).resolve().parent


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_import_contracts_are_kept() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports;"
            " sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_every_top_level_module_has_a_layer() -> None:
    """A new module must be placed in the layer contract, or its imports go unchecked."""
    layered: set[str] = set()
    main = next(c for c in _contracts() if c["type"] == "layers")
    layers = main["layers"]
    assert isinstance(layers, list)
    for layer in layers:
        for name in str(layer).replace("|", " ").replace(":", " ").split():
            layered.add(name.removeprefix("codex_trio."))
    modules = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert modules - layered == set()


def test_every_api_family_is_independent() -> None:
    """Families registered by the server are kept apart; helpers they own are not listed."""
    independence = next(c for c in _contracts() if c["type"] == "independence")
    listed = {str(m).removeprefix("codex_trio.api.") for m in independence["modules"]}  # type: ignore[attr-defined]
    server = (PACKAGE / "server.py").read_text()
    imported = {
        line.split()[1].removeprefix("codex_trio.api.")
        for line in server.splitlines()
        if line.strip().startswith("from codex_trio.api.")
    }
    assert imported <= listed
