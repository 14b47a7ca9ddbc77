"""`device/key/create`, `device/key/public`, `device/key/sign`: the device identity.

The routes are `local_only`: the dispatcher refuses them on ws and unix connections before this
family (or any provider) runs. The store (`codex_trio.device_keys.store`) does the checking and
the provider holds the keys: the TPM (tests swap in the memory provider on the loaded family,
`store.provider`). Errors map as upstream maps them: refusals -32600, platform or crypto -32603.
"""

from __future__ import annotations

import os

import pybase64
import trio

from codex_trio.config.effective import load_config
from codex_trio.device_keys.bindings import SqliteBindingStore
from codex_trio.device_keys.store import Binding, DeviceKeyError, DeviceKeyStore, KeyInfo
from codex_trio.device_keys.tpm import DEFAULT_TCTI, TpmProvider
from codex_trio.protocol.device_keys import (
    DeviceKeyCreateParams,
    DeviceKeyInfoResponse,
    DeviceKeyPublicParams,
    DeviceKeySignParams,
    DeviceKeySignResponse,
)
from codex_trio.protocol.errors import RpcError, internal_error, invalid_request
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services


class DeviceKeysApi:
    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        provider = TpmProvider(self._settings.codex_home, self.tcti)
        self.store = DeviceKeyStore(provider, SqliteBindingStore(self._settings.codex_home))

    def routes(self) -> list[Route]:
        return [
            route("device/key/create", DeviceKeyCreateParams, self.create, local_only=True),
            route("device/key/public", DeviceKeyPublicParams, self.public, local_only=True),
            route("device/key/sign", DeviceKeySignParams, self.sign, local_only=True),
        ]

    async def tcti(self) -> str:
        """`[device_keys] tcti`, else `TPM2TOOLS_TCTI`, else the kernel resource manager."""
        config = await trio.to_thread.run_sync(load_config, self._settings)
        table = config.raw.get("device_keys")
        configured = table.get("tcti") if isinstance(table, dict) else None
        if isinstance(configured, str) and configured:
            return configured
        return os.environ.get("TPM2TOOLS_TCTI") or DEFAULT_TCTI

    async def create(self, ctx: RequestContext, params: DeviceKeyCreateParams) -> DeviceKeyInfoResponse:
        binding = Binding(params.account_user_id, params.client_id)
        try:
            info = await self.store.create(binding, params.protection_policy or "hardware_only")
        except DeviceKeyError as exc:
            raise _rpc(exc) from None
        return _info(info)

    async def public(self, ctx: RequestContext, params: DeviceKeyPublicParams) -> DeviceKeyInfoResponse:
        try:
            return _info(await self.store.public(params.key_id))
        except DeviceKeyError as exc:
            raise _rpc(exc) from None

    async def sign(self, ctx: RequestContext, params: DeviceKeySignParams) -> DeviceKeySignResponse:
        try:
            signature = await self.store.sign(params.key_id, params.payload)
        except DeviceKeyError as exc:
            raise _rpc(exc) from None
        return DeviceKeySignResponse(
            _b64(signature.signature_der), _b64(signature.signed_payload), signature.algorithm
        )


def _info(info: KeyInfo) -> DeviceKeyInfoResponse:
    return DeviceKeyInfoResponse(
        info.key_id, _b64(info.public_key_spki_der), info.algorithm, info.protection_class
    )


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


def _rpc(exc: DeviceKeyError) -> RpcError:
    return internal_error(exc.message) if exc.internal else invalid_request(exc.message)
