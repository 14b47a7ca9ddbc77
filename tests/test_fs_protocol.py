"""fs/* wire rules that need no I/O: path params, params types, the strict base64 decoder."""

from __future__ import annotations

import base64
import random

import pytest

from codex_trio.protocol.b64 import Base64Error, base64_error, decode_base64
from codex_trio.protocol.converter import WireError, structure, unstructure
from codex_trio.protocol.fs import (
    FsChangedNotification,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsGetMetadataResponse,
    FsReadFileParams,
    FsRemoveParams,
    FsWatchParams,
)
from codex_trio.protocol.paths import RELATIVE_PATH_MESSAGE, normalize_absolute


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("//a/b", "/a/b"),
        ("/a/./b/.", "/a/b"),
        ("/a/b/", "/a/b"),
        ("/a/missing/../b", "/a/b"),
        ("/../../a", "/a"),
        ("/a/b/../..", "/"),
        ("/a/.hidden/..x", "/a/.hidden/..x"),
        ("/a/~/b", "/a/~/b"),
    ],
)
def test_absolute_paths_are_normalized_lexically_like_the_reference(raw: str, normal: str) -> None:
    assert normalize_absolute(raw) == normal


@pytest.mark.parametrize("raw", ["", "rel", "./x", "~/x", "~", "a/../b"])
def test_relative_paths_are_refused_with_the_reference_text(raw: str) -> None:
    with pytest.raises(WireError, match=RELATIVE_PATH_MESSAGE):
        normalize_absolute(raw)


def test_a_path_param_of_the_wrong_type_says_path_string() -> None:
    with pytest.raises(WireError, match="invalid type: integer `5`, expected path string"):
        structure({"path": 5}, FsReadFileParams)
    with pytest.raises(WireError, match="missing field `path`"):
        structure({}, FsReadFileParams)


def test_params_read_their_optional_flags_as_the_reference() -> None:
    assert structure({"path": "/x", "recursive": None}, FsCreateDirectoryParams).recursive is None
    assert structure({"path": "/x"}, FsRemoveParams) == FsRemoveParams("/x", None, None)  # type: ignore[arg-type]
    with pytest.raises(WireError, match="invalid type: null, expected a boolean"):
        structure({"sourcePath": "/a", "destinationPath": "/b", "recursive": None}, FsCopyParams)
    copy = structure({"sourcePath": "/a/", "destinationPath": "/b/../c"}, FsCopyParams)
    assert (copy.source_path, copy.destination_path, copy.recursive) == ("/a", "/c", False)
    with pytest.raises(WireError, match="invalid type: integer `5`, expected a string"):
        structure({"path": "/a", "watchId": 5}, FsWatchParams)


def test_responses_use_the_reference_keys_in_its_order() -> None:
    meta = unstructure(FsGetMetadataResponse(False, True, True, 0, 12))
    assert list(meta) == ["isDirectory", "isFile", "isSymlink", "createdAtMs", "modifiedAtMs"]
    assert unstructure(FsChangedNotification("w", ["/a"])) == {"watchId": "w", "changedPaths": ["/a"]}


# Every message below was produced by the reference (0.169.0) for the same input.
REFERENCE_BASE64_ERRORS = {
    "!!!!": "Invalid symbol 33, offset 0.",
    "YWJ": "Invalid padding",
    "YW Jj": "Invalid symbol 32, offset 2.",
    "-_-_": "Invalid symbol 45, offset 0.",
    "YWJj\n": "Invalid symbol 10, offset 4.",
    "Y": "Invalid input length: 1",
    "YW": "Invalid padding",
    "YWJjY": "Invalid input length: 5",
    "YWJjYQ=": "Invalid padding",
    "YWJjYR==": "Invalid last symbol 82, offset 5.",
    "YWJ=": "Invalid last symbol 74, offset 2.",
    "YW==": "Invalid last symbol 87, offset 1.",
    "Y===": "Invalid symbol 61, offset 1.",
    "====": "Invalid symbol 61, offset 0.",
    "=": "Invalid symbol 61, offset 0.",
    "YW=j": "Invalid symbol 61, offset 2.",
    "YWJjYW==YWJj": "Invalid symbol 61, offset 6.",
    "\u00e9": "Invalid symbol 195, offset 0.",
    "YWJj\u00e9": "Invalid symbol 195, offset 4.",
    "YWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJj!WJj": "Invalid symbol 33, offset 32.",
    "YQ===": "Invalid symbol 61, offset 2.",
    "YWJj=": "Invalid symbol 61, offset 4.",
    "YWJjYW=": "Invalid padding",
    "YWJjY===": "Invalid symbol 61, offset 5.",
}


@pytest.mark.parametrize(("text", "message"), sorted(REFERENCE_BASE64_ERRORS.items()))
def test_invalid_base64_is_refused_with_the_reference_decoder_text(text: str, message: str) -> None:
    with pytest.raises(Base64Error) as caught:
        decode_base64(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["", "YWI=", "YWJjYQ==", "AAAA", "/w==", "+/+/"])
def test_canonical_padded_base64_decodes(text: str) -> None:
    assert decode_base64(text) == base64.b64decode(text)


def test_the_fast_decoder_and_the_reference_model_agree_on_random_input() -> None:
    rng = random.Random(5)
    symbols = "AQgwYWJjz09+/==\n é-"
    for _ in range(3000):
        text = "".join(rng.choice(symbols) for _ in range(rng.randint(0, 13)))
        verdict = base64_error(text.encode())
        try:
            decoded = decode_base64(text)
        except Base64Error as exc:
            assert str(exc) == verdict, text
        else:
            assert verdict is None, text
            assert decoded == base64.b64decode(text)


def test_large_payloads_round_trip() -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 1)
    assert decode_base64(base64.b64encode(data).decode()) == data
