"""Whether bubblewrap can confine commands here: the probe and its outcome, per program path.

Its own module so that `initialize` (which warns when the sandbox is unavailable) does not
load the sandbox itself (`codex_trio.sandbox`: policies, the process layer, seccomp).
"""

from __future__ import annotations

import logging
import os
import shutil

import attrs
import trio

from codex_trio.records import by_value

log = logging.getLogger(__name__)

MISSING_BWRAP = (
    "Codex could not find bubblewrap on PATH. Install bubblewrap with your OS package manager. "
    "See the sandbox prerequisites: https://developers.openai.com/codex/concepts/sandboxing#prerequisites. "
    "Until then, commands that the sandbox policy would confine ask for approval and run unconfined."
)
UNUSABLE_BWRAP = (
    "Codex found bubblewrap at {path} but cannot use it: {reason}. The sandbox needs user "
    "namespaces (check kernel.unprivileged_userns_clone / user.max_user_namespaces). "
    "Until then, commands that the sandbox policy would confine ask for approval and run unconfined."
)


@by_value
@attrs.frozen(repr=False, eq=False)
class SandboxSupport:
    """The outcome of probing bubblewrap: its path when usable, else why not."""

    bwrap: str | None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.bwrap is not None and self.problem is None


#: seconds the probe may take: the server's start-up (and so `initialize`) waits for it.
PROBE_TIMEOUT = 10.0

_support: dict[str, SandboxSupport] = {}
#: probes under way: a caller that comes while one runs waits for it instead of probing again.
_probing: dict[str, trio.Event] = {}


async def check_support(program: str = "bwrap") -> SandboxSupport:
    """Find `program` and run a minimal sandbox once; cached per program for the process."""
    while (cached := _support.get(program)) is None and program in _probing:
        await _probing[program].wait()  # set also when that probe was cancelled: then probe here
    if cached is not None:
        return cached
    _probing[program] = done = trio.Event()
    try:
        return await _probe(program)
    finally:
        del _probing[program]
        done.set()


async def _probe(program: str) -> SandboxSupport:
    path = program if "/" in program else shutil.which(program)
    if path is None or not os.access(path, os.X_OK):
        support = SandboxSupport(None, MISSING_BWRAP)
    else:
        probe = [
            path, "--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true",
        ]  # fmt: skip
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                result = await trio.run_process(probe, capture_stdout=True, capture_stderr=True, check=False)
        except OSError as exc:
            support = SandboxSupport(None, UNUSABLE_BWRAP.format(path=path, reason=exc.strerror))
        except trio.TooSlowError:
            reason = f"running `true` in it took more than {PROBE_TIMEOUT:g}s"
            support = SandboxSupport(None, UNUSABLE_BWRAP.format(path=path, reason=reason))
        else:
            if result.returncode == 0:
                support = SandboxSupport(path)
            else:
                reason = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
                support = SandboxSupport(path, UNUSABLE_BWRAP.format(path=path, reason=reason))
    if support.problem is not None:
        log.warning("sandbox unavailable: %s", support.problem)
    _support[program] = support
    return support
