"""Websocket auth: the `--ws-auth` flags, and the check made during the upgrade.

Two modes, as the reference:

* `capability-token`: a shared opaque token, from `--ws-token-file` or as `--ws-token-sha256`.
  Only its SHA-256 is kept, and the presented token's digest is compared in constant time.
* `signed-bearer-token`: an HS256 JWT signed with the secret in `--ws-shared-secret-file`
  (at least 32 bytes), `exp` required, optional `--ws-issuer` / `--ws-audience`, and a clock
  skew allowance (`--ws-max-clock-skew-seconds`, default 30).

Clients send `Authorization: Bearer <token>`. Every refusal is a 401 with the reference's body.
The token is checked only at the upgrade: an accepted connection outlives its token's `exp`.
No trio here: `authorize` is a plain function called by the listener.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from codex_trio.records import by_value

DEFAULT_MAX_CLOCK_SKEW_SECONDS = 30
MIN_SHARED_SECRET_BYTES = 32

MISSING_TOKEN = "missing websocket bearer token"
INVALID_TOKEN = "invalid websocket bearer token"
INVALID_HEADER = "invalid authorization header"
INVALID_JWT = "invalid websocket jwt"
EXPIRED_JWT = "expired websocket jwt"
JWT_NOT_YET_VALID = "websocket jwt is not valid yet"
ISSUER_MISMATCH = "websocket jwt issuer mismatch"
AUDIENCE_MISMATCH = "websocket jwt audience mismatch"

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
#: a compact JWS: three unpadded base64url segments (the reference refuses `=` padding).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_I64 = (-(2**63), 2**63 - 1)


class AuthConfigError(ValueError):
    """The auth flags or files cannot be used; the message is shown as `Error: <message>`."""


@by_value
@attrs.frozen(repr=False, eq=False)
class AuthRejected:
    """Why an upgrade request was refused: an HTTP status and a plain-text body."""

    message: str
    status: int = 401


@by_value
@attrs.frozen(repr=False, eq=False)
class CapabilityTokenAuth:
    """Admit requests bearing the one token whose SHA-256 is `token_sha256`."""

    token_sha256: bytes = attrs.field(repr=False)
    mode = "capability-token"

    def verify(self, token: str, now: float) -> AuthRejected | None:
        presented = hashlib.sha256(token.encode()).digest()
        return None if hmac.compare_digest(presented, self.token_sha256) else AuthRejected(INVALID_TOKEN)


@by_value
@attrs.frozen(repr=False, eq=False)
class SignedBearerAuth:
    """Admit requests bearing an HS256 JWT signed with `shared_secret`."""

    shared_secret: bytes = attrs.field(repr=False)
    issuer: str | None = None
    audience: str | None = None
    max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW_SECONDS
    mode = "signed-bearer-token"

    def verify(self, token: str, now: float) -> AuthRejected | None:
        claims = _decode_claims(token, self.shared_secret)
        if claims is None:
            return AuthRejected(INVALID_JWT)
        at = int(now)
        skew = self.max_clock_skew_seconds
        if at > claims["exp"] + skew:
            return AuthRejected(EXPIRED_JWT)
        nbf = claims.get("nbf")
        if nbf is not None and at < nbf - skew:
            return AuthRejected(JWT_NOT_YET_VALID)
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return AuthRejected(ISSUER_MISMATCH)
        if self.audience is not None and not _audience_matches(claims.get("aud"), self.audience):
            return AuthRejected(AUDIENCE_MISMATCH)
        return None


WebSocketAuth = CapabilityTokenAuth | SignedBearerAuth


def _is_i64(value: Any) -> bool:
    return type(value) is int and _I64[0] <= value <= _I64[1]


def _decode_claims(token: str, secret: bytes) -> dict[str, Any] | None:
    """The verified claims, or None when the token is not a well-formed, well-signed HS256 JWT.

    Signature and algorithm are PyJWT's job (only HS256 is accepted, so `none`, RS256 and the
    other HMAC sizes are refused); the claim checks are ours, with the reference's types:
    `exp` a required integer, `nbf` an optional integer, `iss` a string, `aud` a string or a
    list of strings. `iat` is not looked at.
    """
    if not _COMPACT_JWS.fullmatch(token):
        return None
    import jwt  # only signed-bearer-token servers pay for PyJWT

    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.PyJWTError:
        return None
    if not isinstance(claims, dict) or not _is_i64(claims.get("exp")):
        return None
    if claims.get("nbf") is not None and not _is_i64(claims["nbf"]):
        return None
    if claims.get("iss") is not None and not isinstance(claims["iss"], str):
        return None
    aud = claims.get("aud")
    if (
        aud is not None
        and not isinstance(aud, str)
        and not (isinstance(aud, list) and all(isinstance(item, str) for item in aud))
    ):
        return None
    return claims


def _audience_matches(aud: Any, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in aud


def bearer_token(header: str | None) -> str | AuthRejected:
    """The token of an `Authorization: Bearer <token>` header value, or the refusal."""
    if header is None:
        return AuthRejected(MISSING_TOKEN)
    if any(not (" " <= ch <= "~" or ch == "\t") for ch in header):
        return AuthRejected(INVALID_HEADER)
    scheme, sep, token = header.partition(" ")
    if not sep or scheme.lower() != "bearer":
        return AuthRejected(INVALID_HEADER)
    token = token.strip()
    if not token:
        return AuthRejected(INVALID_HEADER)
    return token


def authorize(
    auth: WebSocketAuth | None, header: str | None, now: float | None = None
) -> AuthRejected | None:
    """None when the request may upgrade; else the 401 to send. No auth configured admits all."""
    if auth is None:
        return None
    token = bearer_token(header)
    if isinstance(token, AuthRejected):
        return token
    return auth.verify(token, time.time() if now is None else now)


def authorizer(auth: WebSocketAuth | None) -> Callable[[str | None], tuple[int, str] | None] | None:
    """`authorize` in the shape `http_head.decide_tcp` takes, or None without auth."""
    if auth is None:
        return None

    def check(header: str | None) -> tuple[int, str] | None:
        rejected = authorize(auth, header)
        return None if rejected is None else (rejected.status, rejected.message)

    return check


# ---------------------------------------------------------------------------------- start-up
def _read_secret(path: Path) -> str:
    try:
        raw = path.read_bytes().decode()
    except OSError as exc:
        raise AuthConfigError(
            f"failed to read websocket auth secret {path}: {exc.strerror} (os error {exc.errno})"
        ) from None
    except UnicodeDecodeError:
        raise AuthConfigError(
            f"failed to read websocket auth secret {path}: stream did not contain valid UTF-8"
        ) from None
    secret = raw.strip()
    if not secret:
        raise AuthConfigError(f"websocket auth secret {path} must not be empty")
    return secret


def load_auth(
    mode: str | None,
    *,
    token_file: Path | None = None,
    token_sha256: str | None = None,
    shared_secret_file: Path | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    max_clock_skew_seconds: int | None = None,
) -> WebSocketAuth | None:
    """Validate the `--ws-*` flags as the reference does and read the secret files.

    Raises AuthConfigError with the reference's wording; relative paths are taken as given
    (relative to the working directory).
    """
    signed_only = (shared_secret_file, issuer, audience, max_clock_skew_seconds)
    if mode is None:
        if token_file is not None or token_sha256 is not None or any(v is not None for v in signed_only):
            raise AuthConfigError(
                "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
            )
        return None
    if mode == "capability-token":
        if any(v is not None for v in signed_only):
            raise AuthConfigError(
                "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and "
                "`--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`"
            )
        if token_file is not None and token_sha256 is not None:
            raise AuthConfigError("`--ws-token-file` and `--ws-token-sha256` are mutually exclusive")
        if token_sha256 is not None:
            if not _SHA256_HEX.fullmatch(token_sha256):
                raise AuthConfigError("--ws-token-sha256 must be a 64-character hex SHA-256 digest")
            return CapabilityTokenAuth(bytes.fromhex(token_sha256))
        if token_file is None:
            raise AuthConfigError(
                "`--ws-token-file` or `--ws-token-sha256` is required when "
                "`--ws-auth capability-token` is set"
            )
        return CapabilityTokenAuth(hashlib.sha256(_read_secret(token_file).encode()).digest())
    if mode == "signed-bearer-token":
        if token_file is not None or token_sha256 is not None:
            raise AuthConfigError(
                "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, "
                "not `signed-bearer-token`"
            )
        if shared_secret_file is None:
            raise AuthConfigError(
                "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
            )
        secret = _read_secret(shared_secret_file).encode()
        if len(secret) < MIN_SHARED_SECRET_BYTES:
            raise AuthConfigError(
                f"signed websocket bearer secret {shared_secret_file} "
                f"must be at least {MIN_SHARED_SECRET_BYTES} bytes"
            )
        return SignedBearerAuth(
            secret,
            issuer=(issuer.strip() or None) if issuer is not None else None,
            audience=(audience.strip() or None) if audience is not None else None,
            max_clock_skew_seconds=(
                DEFAULT_MAX_CLOCK_SKEW_SECONDS if max_clock_skew_seconds is None else max_clock_skew_seconds
            ),
        )
    raise AuthConfigError(f"unknown websocket auth mode `{mode}`")


def require_auth_off_loopback(host: str, port: int, auth: WebSocketAuth | None) -> None:
    """Refuse a listener reachable from other hosts without auth, as the reference does."""
    if auth is None and not ipaddress.ip_address(host).is_loopback:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise AuthConfigError(
            f"refusing to start non-loopback websocket listener {shown} without auth; configure "
            "`--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
        )
