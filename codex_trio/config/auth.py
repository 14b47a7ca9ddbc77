"""Stored credentials: `$CODEX_HOME/auth.json`, as the reference writes and reads it.

An API-key login writes `{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-…"}` (pretty-printed,
mode 0600); logout deletes the file. A file written by the reference's ChatGPT login
(`tokens.id_token` / `access_token`) is read too, so its account shows up. Everything here is
blocking file I/O: callers use `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import attrs

from codex_trio.atomic_files import write_atomic
from codex_trio.records import by_value

AUTH_FILE = "auth.json"
#: the claims namespace in OpenAI id/access tokens.
AUTH_CLAIMS = "https://api.openai.com/auth"


class InvalidToken(ValueError):
    """Not a JWT with a non-empty signature (the signature itself is not verified)."""


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT; raises `InvalidToken` for anything that is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("invalid ID token format")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("invalid ID token format") from None
    if not isinstance(claims, dict):
        raise InvalidToken("invalid ID token format")
    return claims


@by_value
@attrs.frozen(repr=False, eq=False)
class TokenIdentity:
    """What the account methods show about a ChatGPT token."""

    email: str | None = None
    plan_type: str | None = None
    user_id: str | None = None
    account_id: str | None = None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> TokenIdentity:
        auth = claims.get(AUTH_CLAIMS)
        auth = auth if isinstance(auth, dict) else {}

        def text(value: Any) -> str | None:
            return value if isinstance(value, str) and value else None

        return cls(
            email=text(claims.get("email")),
            plan_type=text(auth.get("chatgpt_plan_type")),
            user_id=text(auth.get("chatgpt_user_id")) or text(auth.get("user_id")),
            account_id=text(auth.get("chatgpt_account_id")),
        )


@by_value
@attrs.frozen(repr=False, eq=False)
class StoredAuth:
    """The contents of auth.json that matter: the mode and the secret to send."""

    #: "apikey" or "chatgpt".
    mode: str
    api_key: str | None = None
    access_token: str | None = None
    identity: TokenIdentity = attrs.Factory(TokenIdentity)


def auth_path(codex_home: Path) -> Path:
    return codex_home / AUTH_FILE


def read_auth(codex_home: Path) -> StoredAuth | None:
    """The stored login, or None when there is none (or the file is unreadable)."""
    try:
        data = json.loads(auth_path(codex_home).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    api_key = data.get("OPENAI_API_KEY")
    tokens = data.get("tokens")
    mode = data.get("auth_mode")
    if isinstance(tokens, dict) and mode != "apikey":
        access = tokens.get("access_token")
        identity = TokenIdentity()
        id_token = tokens.get("id_token")
        if isinstance(id_token, str):
            with contextlib.suppress(InvalidToken):
                identity = TokenIdentity.from_claims(jwt_claims(id_token))
        account_id = tokens.get("account_id")
        if identity.account_id is None and isinstance(account_id, str):
            identity = attrs.evolve(identity, account_id=account_id)
        token = access if isinstance(access, str) else None
        return StoredAuth("chatgpt", access_token=token, identity=identity)
    if isinstance(api_key, str):
        return StoredAuth("apikey", api_key=api_key)
    return None


def write_api_key(codex_home: Path, api_key: str) -> None:
    """Persist an API-key login atomically, readable by the owner only."""
    text = json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": api_key}, indent=2)
    write_atomic(auth_path(codex_home), text, mode=0o600)


def delete_auth(codex_home: Path) -> bool:
    """Remove auth.json; True when there was one."""
    try:
        auth_path(codex_home).unlink()
    except FileNotFoundError:
        return False
    return True
