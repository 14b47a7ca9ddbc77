"""The bundled system skills, installed under `CODEX_HOME/skills/.system` as the reference does.

The reference ships five system skills (Image Gen, OpenAI Docs, Review Agent, Skill Creator,
Skill Installer) and writes them into CODEX_HOME with a marker file holding a fingerprint of
the bundle. Ours carry the same names, descriptions and `agents/openai.yaml` interface
metadata, with short bodies of our own (`codex_trio/skills_bundled`). The install is
idempotent: the marker's fingerprint says whether the files on disk are this bundle's; each
file is written atomically. Blocking; callers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from codex_trio.atomic_files import write_atomic

SYSTEM_DIR = ".system"
MARKER = ".codex-system-skills.marker"


def _files(node: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith(("_", ".")):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            found.extend(_files(child, rel + "/"))
        else:
            found.append((rel, child.read_bytes()))
    return found


def bundle() -> list[tuple[str, bytes]]:
    """The bundled files as (relative path, content)."""
    return _files(resources.files("codex_trio").joinpath("skills_bundled"))


def install_system_skills(codex_home: Path) -> Path:
    """Write the bundle under `codex_home/skills/.system` unless the marker says it is there."""
    files = bundle()
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(rel.encode() + b"\0" + data + b"\0")
    fingerprint = digest.hexdigest()[:16]
    root = codex_home / "skills" / SYSTEM_DIR
    marker = root / MARKER
    try:
        if marker.read_text(encoding="utf-8").strip() == fingerprint:
            return root
    except OSError:
        pass
    for rel, data in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
    write_atomic(marker, fingerprint + "\n")
    return root
