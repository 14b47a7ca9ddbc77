"""Websocket auth: flag validation at start-up, every refusal of the upgrade check (pure), and
the statuses and bodies a real upgrade gets on the wire."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio

from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.auth import (
    AUDIENCE_MISMATCH,
    EXPIRED_JWT,
    INVALID_HEADER,
    INVALID_JWT,
    INVALID_TOKEN,
    ISSUER_MISMATCH,
    JWT_NOT_YET_VALID,
    MISSING_TOKEN,
    AuthConfigError,
    AuthRejected,
    CapabilityTokenAuth,
    SignedBearerAuth,
    WebSocketAuth,
    authorize,
    load_auth,
    require_auth_off_loopback,
)
from codex_trio.transport.listen import WebSocketListen
from codex_trio.transport.websocket import WebSocketEndpoint
from tests.ws_client import body_of, connect, http, request_head, status_of

SECRET = b"0123456789abcdef0123456789abcdef"  # 32 bytes
NOW = 1_800_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(
    claims: Any, *, secret: bytes = SECRET, alg: str = "HS256", header: dict[str, Any] | None = None
) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about a 32-byte key for HS384/HS512
        return jwt.encode(claims, secret, algorithm=alg, headers=header)


def hand_made_jwt(
    header: dict[str, Any], payload: bytes, *, secret: bytes = SECRET, signature: str | None = None
) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
    if signature is None:
        import hmac

        signature = b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature}"


def signed(**options: Any) -> SignedBearerAuth:
    return SignedBearerAuth(SECRET, **options)


def check(auth: WebSocketAuth | None, token: str | None) -> str | None:
    rejected = authorize(auth, None if token is None else f"Bearer {token}", now=NOW)
    return None if rejected is None else rejected.message


# ------------------------------------------------------------------------------ flags
def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"mode": "capability-token"},
            "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set",
        ),
        (
            {"mode": "capability-token", "token_file": Path("t"), "token_sha256": "a" * 64},
            "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive",
        ),
        (
            {"mode": "capability-token", "token_sha256": "abcd"},
            "--ws-token-sha256 must be a 64-character hex SHA-256 digest",
        ),
        (
            {"mode": None, "token_file": Path("t")},
            "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
        ),
        (
            {"mode": None, "issuer": "i"},
            "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
        ),
        (
            {"mode": "signed-bearer-token"},
            "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set",
        ),
        (
            {"mode": "signed-bearer-token", "token_file": Path("t")},
            "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, "
            "not `signed-bearer-token`",
        ),
        (
            {"mode": "capability-token", "token_sha256": "a" * 64, "audience": "a"},
            "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` "
            "require `--ws-auth signed-bearer-token`",
        ),
        (
            {"mode": "capability-token", "token_sha256": "a" * 64, "max_clock_skew_seconds": 5},
            "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` "
            "require `--ws-auth signed-bearer-token`",
        ),
    ],
)
def test_inconsistent_auth_flags_are_refused_with_the_reference_message(
    flags: dict[str, Any], message: str
) -> None:
    mode = flags.pop("mode")
    with pytest.raises(AuthConfigError) as caught:
        load_auth(mode, **flags)
    assert str(caught.value) == message


def test_secret_files_are_read_trimmed_and_must_exist_and_not_be_empty(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(
        AuthConfigError,
        match=r"failed to read websocket auth secret .*missing: No such file or directory \(os error 2\)",
    ):
        load_auth("capability-token", token_file=missing)
    with pytest.raises(AuthConfigError, match="must not be empty"):
        load_auth("capability-token", token_file=write(tmp_path, "blank", "  \n"))
    auth = load_auth("capability-token", token_file=write(tmp_path, "token", "s3cret\n"))
    assert isinstance(auth, CapabilityTokenAuth)
    assert auth.token_sha256 == hashlib.sha256(b"s3cret").digest()


def test_a_shared_secret_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    short = write(tmp_path, "short", "x" * 31 + "\n")
    with pytest.raises(
        AuthConfigError, match=r"signed websocket bearer secret .*short must be at least 32 bytes"
    ):
        load_auth("signed-bearer-token", shared_secret_file=short)
    auth = load_auth(
        "signed-bearer-token",
        shared_secret_file=write(tmp_path, "ok", SECRET.decode() + "\n"),
        issuer=" iss ",
        audience="",
    )
    assert auth == SignedBearerAuth(SECRET, issuer="iss", audience=None, max_clock_skew_seconds=30)


def test_a_sha256_digest_is_accepted_in_upper_case() -> None:
    digest = hashlib.sha256(b"tok").hexdigest().upper()
    auth = load_auth("capability-token", token_sha256=digest)
    assert check(auth, "tok") is None


def test_only_loopback_listeners_may_run_without_auth() -> None:
    require_auth_off_loopback("127.0.0.1", 1, None)
    require_auth_off_loopback("::1", 1, None)
    require_auth_off_loopback("0.0.0.0", 1, CapabilityTokenAuth(b"\0" * 32))
    with pytest.raises(AuthConfigError) as caught:
        require_auth_off_loopback("0.0.0.0", 8765, None)
    assert str(caught.value) == (
        "refusing to start non-loopback websocket listener 0.0.0.0:8765 without auth; configure "
        "`--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
    )


# ------------------------------------------------------------------------------ the header
@pytest.mark.parametrize(
    ("header", "outcome"),
    [
        (None, AuthRejected(MISSING_TOKEN)),
        ("tok", AuthRejected(INVALID_HEADER)),
        ("Basic tok", AuthRejected(INVALID_HEADER)),
        ("Bearer", AuthRejected(INVALID_HEADER)),
        ("Bearer    ", AuthRejected(INVALID_HEADER)),
        ("Bearer t\u00f6k", AuthRejected(INVALID_HEADER)),
        ("Bearer wrong", AuthRejected(INVALID_TOKEN)),
        ("Bearer tok", None),
        ("bearer tok", None),
        ("BEARER   tok  ", None),
    ],
)
def test_the_capability_token_is_read_from_a_bearer_authorization_header(
    header: str | None, outcome: AuthRejected | None
) -> None:
    auth = CapabilityTokenAuth(hashlib.sha256(b"tok").digest())
    assert authorize(auth, header, now=NOW) == outcome


def test_the_digest_of_a_token_with_a_newline_does_not_match_the_token() -> None:
    auth = CapabilityTokenAuth(hashlib.sha256(b"tok\n").digest())
    assert check(auth, "tok") == INVALID_TOKEN


def test_without_auth_everything_is_admitted() -> None:
    assert authorize(None, None) is None


# ------------------------------------------------------------------------------ JWTs
@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        (make_jwt({"exp": NOW + 60}), None),
        (make_jwt({"exp": NOW + 10 * 365 * 86400}), None),
        (make_jwt({"exp": NOW + 60, "iat": NOW + 3600}), None),
        (make_jwt({"exp": NOW + 60}, header={"typ": "at+jwt", "kid": "k1"}), None),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": NOW + 60}).encode()), None),
        (make_jwt({"exp": NOW + 60}, alg="HS384"), INVALID_JWT),
        (make_jwt({"exp": NOW + 60}, alg="HS512"), INVALID_JWT),
        (hand_made_jwt({"alg": "none"}, json.dumps({"exp": NOW + 60}).encode(), signature=""), INVALID_JWT),
        (hand_made_jwt({"alg": "none"}, json.dumps({"exp": NOW + 60}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "RS256"}, json.dumps({"exp": NOW + 60}).encode()), INVALID_JWT),
        (make_jwt({"exp": NOW + 60}, secret=b"another secret that is long enough!!"), INVALID_JWT),
        (make_jwt({"exp": NOW + 60}, secret=SECRET + b"\n"), INVALID_JWT),
        ("abc.def.ghi", INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, b"[1,2,3]"), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, b"not json"), INVALID_JWT),
        (make_jwt({"exp": NOW + 60}) + "=", INVALID_JWT),
        (make_jwt({"sub": "x"}), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": str(NOW + 60)}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": NOW + 60.5}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": True}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": NOW + 60, "nbf": "soon"}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": NOW + 60, "aud": 5}).encode()), INVALID_JWT),
        (hand_made_jwt({"alg": "HS256"}, json.dumps({"exp": NOW + 60, "iss": 5}).encode()), INVALID_JWT),
        (make_jwt({"exp": 0}), EXPIRED_JWT),
        (make_jwt({"exp": NOW - 31}), EXPIRED_JWT),
        (make_jwt({"exp": NOW - 30}), None),
        (make_jwt({"exp": NOW + 60, "nbf": NOW + 31}), JWT_NOT_YET_VALID),
        (make_jwt({"exp": NOW + 60, "nbf": NOW + 30}), None),
        (make_jwt({"exp": NOW + 60, "iss": "anyone", "aud": "anything"}), None),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
def test_signed_bearer_tokens_are_hs256_jwts_with_an_integer_exp(token: str, outcome: str | None) -> None:
    assert check(signed(), token) == outcome


def test_the_clock_skew_allowance_is_configurable() -> None:
    strict = signed(max_clock_skew_seconds=0)
    assert check(strict, make_jwt({"exp": NOW + 5})) is None
    assert check(strict, make_jwt({"exp": NOW - 5})) == EXPIRED_JWT
    lenient = signed(max_clock_skew_seconds=120)
    assert check(lenient, make_jwt({"exp": NOW - 90})) is None
    assert check(lenient, make_jwt({"exp": NOW - 150})) == EXPIRED_JWT


def test_issuer_and_audience_are_checked_only_when_configured() -> None:
    auth = signed(issuer="iss-A", audience="aud-A")
    assert check(auth, make_jwt({"exp": NOW + 60, "iss": "iss-A", "aud": "aud-A"})) is None
    assert check(auth, make_jwt({"exp": NOW + 60, "iss": "iss-A", "aud": ["wrong", "aud-A"]})) is None
    assert check(auth, make_jwt({"exp": NOW + 60, "iss": "iss-B", "aud": "aud-A"})) == ISSUER_MISMATCH
    assert check(auth, make_jwt({"exp": NOW + 60, "aud": "aud-A"})) == ISSUER_MISMATCH
    assert check(auth, make_jwt({"exp": NOW + 60, "iss": "iss-A", "aud": "aud-B"})) == AUDIENCE_MISMATCH
    assert check(auth, make_jwt({"exp": NOW + 60, "iss": "iss-A"})) == AUDIENCE_MISMATCH


def test_a_signed_bearer_header_is_still_required() -> None:
    assert authorize(signed(), None, now=NOW) == AuthRejected(MISSING_TOKEN)
    assert authorize(signed(), "Token abc", now=NOW) == AuthRejected(INVALID_HEADER)


# ------------------------------------------------------------------------------ on the wire
@pytest.fixture
async def token_server(leak_check: Any, server_settings: ServerSettings) -> AsyncIterator[AppServer]:
    settings = attrs.evolve(
        server_settings,
        listen=WebSocketListen("127.0.0.1", 0),
        ws_auth=CapabilityTokenAuth(hashlib.sha256(b"right").digest()),
    )
    async with open_app_server(settings) as server:
        yield server


def port_of(server: AppServer) -> int:
    assert isinstance(server.listening, WebSocketEndpoint)
    return server.listening.port


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, MISSING_TOKEN),
        ({"Sec-WebSocket-Protocol": "right"}, MISSING_TOKEN),
        ({"Authorization": "Bearer wrong"}, INVALID_TOKEN),
        ({"Authorization": "right"}, INVALID_HEADER),
        ({"Authorization": "Basic right"}, INVALID_HEADER),
    ],
)
async def test_refused_upgrades_get_401_with_a_plain_text_reason(
    token_server: AppServer, headers: dict[str, str], body: str
) -> None:
    response = await http(port_of(token_server), request_head(**headers))
    assert status_of(response) == 401
    assert b"content-type: text/plain; charset=utf-8" in response
    assert body_of(response) == body.encode()
    assert not token_server.broadcaster.connections


async def test_the_query_string_does_not_carry_a_token(token_server: AppServer) -> None:
    response = await http(port_of(token_server), request_head("/?token=right&access_token=right"))
    assert status_of(response) == 401 and body_of(response) == MISSING_TOKEN.encode()


async def test_health_probes_need_no_token(token_server: AppServer) -> None:
    response = await http(port_of(token_server), request_head("/readyz", upgrade=False))
    assert status_of(response) == 200


async def test_the_right_token_upgrades_and_serves(token_server: AppServer) -> None:
    with trio.fail_after(10):
        async with connect(port_of(token_server), headers=[(b"Authorization", b"bearer right")]) as client:
            result = await client.rpc.initialize()
            assert result["platformOs"] == "linux"


async def test_a_jwt_is_checked_only_at_the_upgrade(leak_check: Any, server_settings: ServerSettings) -> None:
    settings = attrs.evolve(
        server_settings,
        listen=WebSocketListen("127.0.0.1", 0),
        ws_auth=SignedBearerAuth(SECRET, max_clock_skew_seconds=0),
    )
    async with open_app_server(settings) as server:
        port = port_of(server)
        expired = make_jwt({"exp": int(time.time()) - 5})
        response = await http(port, request_head(Authorization=f"Bearer {expired}"))
        assert status_of(response) == 401 and body_of(response) == EXPIRED_JWT.encode()
        valid = make_jwt({"exp": int(time.time()) + 60})
        with trio.fail_after(10):
            async with connect(port, headers=[(b"Authorization", f"Bearer {valid}".encode())]) as client:
                await client.rpc.initialize()
