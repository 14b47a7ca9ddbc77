"""The `hardware_tpm` provider against a real software TPM (Debian `swtpm`, started here on free
loopback ports), every signature verified with `cryptography`."""

from __future__ import annotations

import base64
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.device_keys.tpm import key_dir
from codex_trio.protocol.errors import RpcError
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck, StdioServer
from tests.device_key_helpers import (
    ACCOUNT,
    CLIENT,
    connection_payload,
    create,
    enrollment_payload,
    local_client,
    verify,
)

TIMEOUT = 30
UNAVAILABLE = "hardware-backed device keys are not available on this platform"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A free port whose successor is free too: the swtpm TCTI finds the control channel at +1."""
    while True:
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@attrs.frozen
class SoftwareTpm:
    tcti: str
    state: Path


@pytest.fixture
async def swtpm(tmp_path: Path) -> AsyncIterator[SoftwareTpm]:
    async with _swtpm(tmp_path / "tpm-state") as tpm:
        yield tpm


class _swtpm:
    """A swtpm process serving TPM 2.0 on two free loopback ports (data, control = data + 1)
    until the block ends."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.process: trio.Process | None = None

    async def __aenter__(self) -> SoftwareTpm:
        self.state.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another process may take a port between the probe and the bind
            port = free_port_pair()
            ctrl = port + 1
            self.process = await trio.lowlevel.open_process(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                 "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if await self._listening(port):
                return SoftwareTpm(f"swtpm:host=127.0.0.1,port={port}", self.state)
            await self._stop()
        raise RuntimeError("swtpm did not start")

    async def _listening(self, port: int) -> bool:
        assert self.process is not None
        with trio.move_on_after(10):
            while self.process.poll() is None:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return True
        return False

    async def _stop(self) -> None:
        if self.process is not None:
            with trio.CancelScope(shield=True):
                self.process.kill()
                await self.process.wait()
                self.process = None

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()


def tpm_settings(settings: ServerSettings, tcti: str) -> ServerSettings:
    (settings.codex_home / "config.toml").write_text(f'[device_keys]\ntcti = "{tcti}"\n')
    return settings


@pytest.fixture
async def tpm_client(
    swtpm: SoftwareTpm, leak_check: LeakCheck, server_settings: ServerSettings
) -> AsyncIterator[ClientConnection]:
    async with local_client(tpm_settings(server_settings, swtpm.tcti)) as client:
        yield client


async def test_a_tpm_key_signs_proofs_that_verify(tpm_client: ClientConnection, codex_home: Path) -> None:
    with trio.fail_after(TIMEOUT):
        created = await create(tpm_client)
        assert created["keyId"].startswith("dk_tpm_")
        assert created["protectionClass"] == "hardware_tpm" and created["algorithm"] == "ecdsa_p256_sha256"
        assert await tpm_client.call("device/key/public", {"keyId": created["keyId"]}) == created
        for payload in (connection_payload(), enrollment_payload()):
            result = await tpm_client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
            verify(created["publicKeySpkiDerBase64"], result, payload)
    # What is on disk is the TPM-wrapped blob of a non-exportable, sign-only P-256 key.
    blobs = key_dir(codex_home, created["keyId"])
    assert sorted(p.name for p in blobs.iterdir()) == ["private.tpm", "public.tpm"]
    assert (blobs / "private.tpm").stat().st_mode & 0o777 == 0o600
    result = await trio.run_process(
        ["tpm2_print", "-t", "TPM2B_PUBLIC", str(blobs / "public.tpm")], capture_stdout=True
    )
    printed = result.stdout.decode()
    attributes = printed.split("attributes:")[1].split("\n")[1]
    assert set(attributes.split("value:")[1].strip().split("|")) == {
        "fixedtpm", "fixedparent", "sensitivedataorigin", "userwithauth", "sign"
    }  # fmt: skip
    assert "NIST p256" in printed


async def test_concurrent_signatures_share_the_tpm(tpm_client: ClientConnection) -> None:
    created = await create(tpm_client)
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def sign() -> None:
        payload = connection_payload()
        result = await tpm_client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
        results.append((payload, result))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(sign)
    assert len(results) == 6
    for payload, result in results:
        verify(created["publicKeySpkiDerBase64"], result, payload)


async def test_keys_survive_a_restart_and_only_the_tpm_that_made_them_can_use_them(
    swtpm: SoftwareTpm, leak_check: LeakCheck, server_settings: ServerSettings, tmp_path: Path
) -> None:
    settings = tpm_settings(server_settings, swtpm.tcti)
    with trio.fail_after(TIMEOUT):
        async with local_client(settings) as client:
            created = await create(client)
        async with local_client(settings) as client:
            assert await client.call("device/key/public", {"keyId": created["keyId"]}) == created
            payload = enrollment_payload()
            result = await client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
            verify(created["publicKeySpkiDerBase64"], result, payload)
        # Another TPM (another owner seed) cannot unwrap the blob: the key is bound to its TPM.
        async with _swtpm(tmp_path / "other-tpm") as other:
            other_settings = tpm_settings(server_settings, other.tcti)
            async with local_client(other_settings) as client:
                with pytest.raises(RpcError) as caught:
                    await client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
                assert caught.value.code == -32603
                assert caught.value.message.startswith("device key platform error: tpm2_load failed")


@pytest.mark.parametrize("policy", [None, "hardware_only", "allow_os_protected_nonextractable"])
async def test_without_a_tpm_both_policies_refuse(
    leak_check: LeakCheck, server_settings: ServerSettings, policy: str | None
) -> None:
    settings = tpm_settings(server_settings, f"swtpm:host=127.0.0.1,port={free_port()}")
    params: dict[str, Any] = {"accountUserId": ACCOUNT, "clientId": CLIENT}
    if policy is not None:
        params["protectionPolicy"] = policy
    with trio.fail_after(TIMEOUT):
        async with local_client(settings) as client:
            with pytest.raises(RpcError) as caught:
                await client.call("device/key/create", params)
            assert (caught.value.code, caught.value.message) == (-32600, UNAVAILABLE)
    assert not (server_settings.codex_home / "device-keys").exists()


async def test_the_tcti_comes_from_the_environment_without_config(
    swtpm: SoftwareTpm,
    leak_check: LeakCheck,
    server_settings: ServerSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TPM2TOOLS_TCTI", swtpm.tcti)
    with trio.fail_after(TIMEOUT):
        async with local_client(server_settings) as client:
            created = await create(client)
            assert base64.b64decode(created["publicKeySpkiDerBase64"])
    monkeypatch.setenv("TPM2TOOLS_TCTI", "device:/nonexistent/tpmrm0")
    async with local_client(server_settings) as client:
        with pytest.raises(RpcError, match=UNAVAILABLE):
            await create(client)


async def test_a_stdio_client_of_the_real_server_process_gets_tpm_keys(
    swtpm: SoftwareTpm, stdio_server: StdioServer
) -> None:
    (stdio_server.codex_home / "config.toml").write_text(f'[device_keys]\ntcti = "{swtpm.tcti}"\n')
    client = stdio_server.client
    with trio.fail_after(TIMEOUT):
        await client.initialize("pytest")
        created = await create(client)
        assert created["protectionClass"] == "hardware_tpm"
        payload = connection_payload()
        result = await client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
        verify(created["publicKeySpkiDerBase64"], result, payload)


async def test_a_tpm_that_goes_away_is_reported_and_its_keys_work_once_it_is_back(
    leak_check: LeakCheck, server_settings: ServerSettings, tmp_path: Path
) -> None:
    state = tmp_path / "restarted-tpm"
    with trio.fail_after(TIMEOUT):
        async with _swtpm(state) as first:
            settings = tpm_settings(server_settings, first.tcti)
            async with local_client(settings) as client:
                created = await create(client)
        # The server is still running; its TPM is gone.
        async with local_client(settings) as client:
            params = {"keyId": created["keyId"], "payload": connection_payload()}
            with pytest.raises(RpcError) as caught:
                await client.call("device/key/sign", params)
            assert (caught.value.code, caught.value.message) == (-32600, UNAVAILABLE)
        # The same TPM (its state) back on other ports: the stored blobs load again.
        async with (
            _swtpm(state) as second,
            local_client(tpm_settings(server_settings, second.tcti)) as client,
        ):
            payload = enrollment_payload()
            result = await client.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
            verify(created["publicKeySpkiDerBase64"], result, payload)
