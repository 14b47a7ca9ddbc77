"""The TPM 2.0 provider (`hardware_tpm`), driving the Debian `tpm2-tools` programs.

A key is created inside the TPM under the owner hierarchy's storage primary key (ECC P-256,
re-derived from the TPM's seed on every use, so nothing about it is stored): attributes
`fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign`, scheme ECDSA-SHA256. The TPM
returns the private part wrapped by that primary; only the wrapped blobs are written, under
`$CODEX_HOME/device-keys/tpm2/<sha256(key id)>/`. Signing loads them back into the TPM.

Which TPM: `[device_keys] tcti` in config.toml, else `TPM2TOOLS_TCTI`, else the kernel resource
manager (`device:/dev/tpmrm0`). A TCTI that cannot be opened, or missing tools, is the
hardware-unavailable error.

A TPM without a resource manager in front (a bare `swtpm`) holds only three transient objects,
and every tool invocation leaves the objects it loaded behind; so operations run one at a time
and transient objects are flushed after each step.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from codex_trio.device_keys.store import HARDWARE_TPM, DeviceKeyError, KeyInfo, allows, b64url, key_id_for

DEFAULT_TCTI = "device:/dev/tpmrm0"
KEY_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
#: seconds one tpm2-tools program may take (a hung TPM must not hang a request forever).
TOOL_TIMEOUT = 30.0
_UNAVAILABLE_MARKERS = ("Could not load tcti", "/dev/tpm")


def key_dir(codex_home: Path, key_id: str) -> Path:
    return codex_home / "device-keys" / "tpm2" / b64url(hashlib.sha256(key_id.encode()).digest())


class TpmProvider:
    """`DeviceKeyProvider` backed by a TPM 2.0 through tpm2-tools."""

    def __init__(self, codex_home: Path, tcti: Callable[[], Awaitable[str]]) -> None:
        self._home = codex_home
        self._tcti = tcti
        self._lock = trio.Lock()

    async def create(self, key_id_random: str, policy: str) -> KeyInfo:
        if not allows(policy, HARDWARE_TPM):
            raise DeviceKeyError.degraded_not_allowed(HARDWARE_TPM)
        key_id = key_id_for(HARDWARE_TPM, key_id_random)
        async with self._session() as tpm:
            await tpm.run("tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", tpm.file("primary.ctx"))
            await tpm.run(
                "tpm2_create", "-C", tpm.file("primary.ctx"), "-G", "ecc256:ecdsa-sha256",
                "-a", KEY_ATTRIBUTES, "-u", tpm.file("public.tpm"), "-r", tpm.file("private.tpm"),
            )  # fmt: skip
            spki = await tpm.public_der()
            try:
                await trio.to_thread.run_sync(_install, tpm.dir, key_dir(self._home, key_id))
            except OSError as exc:
                raise DeviceKeyError.platform(f"storing the key blobs: {exc}") from None
        return KeyInfo(key_id, spki, HARDWARE_TPM)

    async def public(self, key_id: str, protection_class: str) -> KeyInfo:
        path = await self._existing(key_id, protection_class)
        async with self._session(path) as tpm:
            await tpm.load()
            spki = await tpm.public_der()
        return KeyInfo(key_id, spki, HARDWARE_TPM)

    async def sign(self, key_id: str, protection_class: str, payload: bytes) -> bytes:
        path = await self._existing(key_id, protection_class)
        async with self._session(path) as tpm:
            await tpm.load()
            message = tpm.file("message.bin")
            await trio.to_thread.run_sync(Path(message).write_bytes, payload)
            signature = tpm.file("signature.der")
            # `plain` is DER (ECDSA-Sig-Value) for ECC keys.
            await tpm.run(
                "tpm2_sign",
                "-c",
                tpm.file("key.ctx"),
                "-g",
                "sha256",
                "-f",
                "plain",
                "-o",
                signature,
                message,
            )
            return await trio.to_thread.run_sync(Path(signature).read_bytes)

    async def delete(self, key_id: str, protection_class: str) -> None:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(key_dir(self._home, key_id), ignore_errors=True))

    async def _existing(self, key_id: str, protection_class: str) -> Path:
        path = key_dir(self._home, key_id)
        if protection_class != HARDWARE_TPM or not await trio.to_thread.run_sync(_has_blobs, path):
            raise DeviceKeyError.not_found()
        return path

    def _session(self, blobs: Path | None = None) -> _Session:
        return _Session(self, blobs)


class _Session:
    """One TPM operation: exclusive use of the TPM, a private scratch directory, clean-up."""

    def __init__(self, provider: TpmProvider, blobs: Path | None) -> None:
        self._provider = provider
        self._blobs = blobs
        self.dir = Path()
        self._env: dict[str, str] = {}
        self._loaded = False

    async def __aenter__(self) -> _Session:
        tcti = await self._provider._tcti()
        self._env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
        await self._provider._lock.acquire()
        try:
            self.dir = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "codex-device-key-"))
            await self._flush()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(TOOL_TIMEOUT):
                if self.dir != Path():
                    with contextlib.suppress(DeviceKeyError):
                        await self._flush()
                    await trio.to_thread.run_sync(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        finally:
            self._provider._lock.release()

    def file(self, name: str) -> str:
        return str(self.dir / name)

    async def load(self) -> None:
        """Load the stored blobs under a freshly derived primary."""
        assert self._blobs is not None
        await self.run("tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", self.file("primary.ctx"))
        await self._load_key(str(self._blobs / "public.tpm"), str(self._blobs / "private.tpm"))

    async def _load_key(self, public: str, private: str) -> None:
        await self.run(
            "tpm2_load",
            "-C",
            self.file("primary.ctx"),
            "-u",
            public,
            "-r",
            private,
            "-c",
            self.file("key.ctx"),
        )
        self._loaded = True

    async def public_der(self) -> bytes:
        """The loaded key's public half as DER SubjectPublicKeyInfo."""
        if not self._loaded:
            await self._load_key(self.file("public.tpm"), self.file("private.tpm"))
        out = self.file("public.der")
        await self.run("tpm2_readpublic", "-c", self.file("key.ctx"), "-f", "der", "-o", out)
        return await trio.to_thread.run_sync(Path(out).read_bytes)

    async def run(self, *argv: str) -> None:
        """Run one tool, then flush what it left loaded (see the module docstring)."""
        await self._tool(argv)
        await self._flush()

    async def _flush(self) -> None:
        await self._tool(("tpm2_flushcontext", "-t"))

    async def _tool(self, argv: Sequence[str]) -> None:
        try:
            with trio.fail_after(TOOL_TIMEOUT):
                result = await trio.run_process(
                    list(argv), capture_stdout=True, capture_stderr=True, check=False, env=self._env,
                    cwd=self.dir,
                )  # fmt: skip
        except FileNotFoundError:
            raise DeviceKeyError.hardware_unavailable() from None
        except trio.TooSlowError:
            raise DeviceKeyError.platform(f"{argv[0]} timed out after {TOOL_TIMEOUT:.0f}s") from None
        except OSError as exc:
            raise DeviceKeyError.platform(f"failed to run {argv[0]}: {exc}") from None
        if result.returncode == 0:
            return
        stderr = result.stderr.decode("utf-8", "replace")
        if any(marker in stderr for marker in _UNAVAILABLE_MARKERS):
            raise DeviceKeyError.hardware_unavailable()
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        raise DeviceKeyError.platform(f"{argv[0]} failed with exit status {result.returncode}: {detail}")


def _has_blobs(path: Path) -> bool:
    return (path / "public.tpm").is_file() and (path / "private.tpm").is_file()


def _install(scratch: Path, destination: Path) -> None:
    """Move the wrapped blobs into place, each by an atomic rename, owner-readable only."""
    destination.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("public.tpm", "private.tpm"):
        tmp = destination / f".{name}.tmp"
        shutil.copyfile(scratch / name, tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, destination / name)
