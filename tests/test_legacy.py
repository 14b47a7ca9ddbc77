"""`gitDiffToRemote`, `fuzzyFileSearch` (scoring, listing, caps) and the search sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.api.fuzzy import MAX_RESULTS, Candidate, list_candidates, score_path, search
from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.environ.get("PATH", os.defpath),
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@asynccontextmanager
async def client_for(tmp_path: Path, **capabilities: Any) -> AsyncIterator[ClientConnection]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with trio.fail_after(20):
        async with open_app_server(
            ServerSettings(codex_home=home, listen=NoListen(), cwd=tmp_path)
        ) as server:
            client = await server.connect()
            await client.initialize(**capabilities)
            yield client


# ---------------------------------------------------------------------------- scoring (sync)
def test_a_query_matches_as_an_ordered_subsequence_with_its_indices() -> None:
    assert score_path("main", "src/main.py") is not None
    assert score_path("main", "src/main.py")[1] == (4, 5, 6, 7)  # type: ignore[index]
    assert score_path("MAIN", "src/main.py") is not None, "matching ignores case"
    assert score_path("nima", "src/main.py") is None
    assert score_path("", "src/main.py") is None


def test_file_name_and_word_start_matches_rank_higher() -> None:
    results = search(
        "main", [("r", [Candidate("docs/domain_notes.txt", False), Candidate("src/main.py", False)])]
    )
    assert [m.path for m in results] == ["src/main.py", "docs/domain_notes.txt"]
    shorter = search(
        "util", [("r", [Candidate("a/util.py", False), Candidate("a/util_extra_long_name.py", False)])]
    )
    assert shorter[0].path == "a/util.py"


def test_results_are_capped_and_sorted_by_score() -> None:
    candidates = [Candidate(f"docs/match_{n:03d}.txt", False) for n in range(200)]
    results = search("match", [("root", candidates)])
    assert len(results) == MAX_RESULTS
    assert [m.score for m in results] == sorted((m.score for m in results), reverse=True)


def test_directories_match_with_their_own_type() -> None:
    [match] = search("src", [("r", [Candidate("src", True)])])
    assert match.to_wire()["match_type"] == "directory"
    assert match.to_wire()["file_name"] == "src"


def test_listing_outside_a_repository_walks_everything_but_git_internals(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("")
    (tmp_path / ".gitignore").write_text("*.txt\n")
    paths = {c.path for c in list_candidates(tmp_path)}
    assert ".hidden/secret.txt" in paths and ".hidden" in paths
    assert not any(p.startswith(".git/") for p in paths)
    assert list_candidates(tmp_path / "missing") == []


@needs_git
def test_listing_inside_a_repository_respects_gitignore(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("build/\n*.log\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.bin").write_text("")
    (tmp_path / "keep.log").write_text("")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("")
    (tmp_path / ".hidden.cfg").write_text("")
    paths = {c.path for c in list_candidates(tmp_path)}
    assert {"src/app.py", "src", ".hidden.cfg", ".gitignore"} <= paths
    assert "build/out.bin" not in paths and "keep.log" not in paths


# ---------------------------------------------------------------------------- methods
async def test_fuzzy_file_search_answers_with_snake_case_results(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("")
    async with client_for(tmp_path) as client:
        result = await client.call("fuzzyFileSearch", {"query": "main", "roots": ["proj"]})
        [hit] = [f for f in result["files"] if f["path"] == "src/main.py"]
        assert hit["root"] == "proj", "the root is echoed as sent"
        assert (hit["file_name"], hit["match_type"], hit["indices"]) == ("main.py", "file", [4, 5, 6, 7])
        assert (await client.call("fuzzyFileSearch", {"query": "", "roots": ["proj"]}))["files"] == []
        assert (await client.call("fuzzyFileSearch", {"query": "main", "roots": []}))["files"] == []
        missing = await client.call(
            "fuzzyFileSearch", {"query": "main", "roots": ["nope"], "cancellationToken": "t"}
        )
        assert missing["files"] == []


async def test_search_sessions_announce_results_and_end_with_stop(tmp_path: Path) -> None:
    (tmp_path / "alpha_target.txt").write_text("")
    async with client_for(tmp_path, experimentalApi=True) as client:
        assert (
            await client.call("fuzzyFileSearch/sessionStart", {"sessionId": "s", "roots": [str(tmp_path)]})
            == {}
        )
        first = await client.wait_for("fuzzyFileSearch/sessionUpdated")
        assert first["params"] == {"sessionId": "s", "query": "", "files": []}
        await client.wait_for("fuzzyFileSearch/sessionCompleted")
        assert await client.call("fuzzyFileSearch/sessionUpdate", {"sessionId": "s", "query": "alpha"}) == {}
        updated = await client.wait_for("fuzzyFileSearch/sessionUpdated", lambda p: p["query"] == "alpha")
        assert [f["path"] for f in updated["params"]["files"]] == ["alpha_target.txt"]
        completed = await client.wait_for("fuzzyFileSearch/sessionCompleted")
        assert completed["params"] == {"sessionId": "s"}
        assert await client.call("fuzzyFileSearch/sessionStop", {"sessionId": "s"}) == {}
        assert await client.call("fuzzyFileSearch/sessionStop", {"sessionId": "s"}) == {}
        with pytest.raises(RpcError) as raised:
            await client.call("fuzzyFileSearch/sessionUpdate", {"sessionId": "s", "query": "x"})
        assert (raised.value.code, raised.value.message) == (-32600, "fuzzy file search session not found: s")


async def test_session_start_needs_a_root_and_the_experimental_capability(tmp_path: Path) -> None:
    async with client_for(tmp_path, experimentalApi=True) as client:
        with pytest.raises(RpcError) as raised:
            await client.call("fuzzyFileSearch/sessionStart", {"sessionId": "s", "roots": []})
        assert raised.value.code == -32603
        assert "at least one search directory is required" in raised.value.message
    async with client_for(tmp_path) as plain:
        with pytest.raises(
            RpcError, match="fuzzyFileSearch/sessionStart requires experimentalApi capability"
        ):
            await plain.call("fuzzyFileSearch/sessionStart", {"sessionId": "s", "roots": [str(tmp_path)]})


@needs_git
async def test_git_diff_to_remote_diffs_the_working_tree_against_the_remote_base(tmp_path: Path) -> None:
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "clone", "-q", str(origin), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "a.txt").write_text("one\ntwo\n")
    git(work, "add", "a.txt")
    git(work, "commit", "-q", "-m", "base")
    git(work, "push", "-q", "origin", "main")
    base = git(work, "rev-parse", "HEAD").strip()
    (work / "a.txt").write_text("one\nTWO\n")
    git(work, "commit", "-qam", "local commit")
    (work / "untracked.txt").write_text("new file\n")
    (work / "blob.bin").write_bytes(bytes(range(256)))
    async with client_for(tmp_path) as client:
        result = await client.call("gitDiffToRemote", {"cwd": "work"})
        assert result["sha"] == base, "the base is the remote's commit, not local HEAD"
        diff = result["diff"]
        assert "diff --git a/a.txt b/a.txt" in diff and "+TWO" in diff
        assert "untracked.txt" in diff and "new file mode 100644" in diff and "+new file" in diff
        assert "GIT binary patch" in diff
        for cwd in (str(tmp_path), str(tmp_path / "missing")):
            with pytest.raises(RpcError) as raised:
                await client.call("gitDiffToRemote", {"cwd": cwd})
            assert raised.value.message == f'failed to compute git diff to remote for cwd: "{cwd}"'
