"""A device-key provider that keeps software keys in memory: for unit tests only.

It claims whatever protection class the test gives it, which is exactly why the server never
chooses it: a test replaces the loaded family's provider
(`(await server.family(DeviceKeysApi)).store.provider = MemoryProvider(...)`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from codex_trio.device_keys.store import DeviceKeyError, KeyInfo, allows, key_id_for


class MemoryProvider:
    def __init__(self, protection_class: str) -> None:
        self.protection_class = protection_class
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        #: how many times each operation ran (tests check the transport policy never got here).
        self.calls: list[str] = []

    async def create(self, key_id_random: str, policy: str) -> KeyInfo:
        self.calls.append("create")
        if not allows(policy, self.protection_class):
            raise DeviceKeyError.degraded_not_allowed(self.protection_class)
        key_id = key_id_for(self.protection_class, key_id_random)
        key = self.keys.setdefault(key_id, ec.generate_private_key(ec.SECP256R1()))
        return self._info(key_id, key)

    async def public(self, key_id: str, protection_class: str) -> KeyInfo:
        self.calls.append("public")
        return self._info(key_id, self._key(key_id, protection_class))

    async def sign(self, key_id: str, protection_class: str, payload: bytes) -> bytes:
        self.calls.append("sign")
        return self._key(key_id, protection_class).sign(payload, ec.ECDSA(hashes.SHA256()))

    async def delete(self, key_id: str, protection_class: str) -> None:
        self.calls.append("delete")
        self.keys.pop(key_id, None)

    def _key(self, key_id: str, protection_class: str) -> ec.EllipticCurvePrivateKey:
        key = self.keys.get(key_id) if protection_class == self.protection_class else None
        if key is None:
            raise DeviceKeyError.not_found()
        return key

    def _info(self, key_id: str, key: ec.EllipticCurvePrivateKey) -> KeyInfo:
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return KeyInfo(key_id, spki, self.protection_class)
