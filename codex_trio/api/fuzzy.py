"""Fuzzy file search: listing the candidates under a root and scoring them (blocking, no trio).

Listing: inside a git work tree the candidates are what `git ls-files --cached --others
--exclude-standard` reports (so `.gitignore` is respected exactly, hidden files included) plus
their parent directories; elsewhere every file and directory below the root (no ignore rules
apply outside a repository, as in the reference). At most `MAX_CANDIDATES` entries per root.

Scoring: the query's characters (case-insensitive, spaces ignored) must appear in order in the
relative path. Among the alignments the best one scores each matched character, with bonuses
for consecutive runs, word starts (after `/ _ - .` or a case change) and matches inside the file
name, and penalties for gaps. Only positions holding a query character are visited, so scoring
stays fast on long paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import attrs

from codex_trio.records import by_value

#: results returned per search, as the reference caps them.
MAX_RESULTS = 50
#: entries listed per root; a bigger tree is searched in its first this-many entries.
MAX_CANDIDATES = 200_000
#: seconds `git ls-files` may take before the plain walk is used instead.
GIT_LIST_TIMEOUT = 20.0
#: longest query (in characters) that is scored; the rest is ignored.
MAX_QUERY = 64

SCORE_MATCH = 16
BONUS_CONSECUTIVE = 12
BONUS_BOUNDARY = 10
BONUS_FIRST = 8
BONUS_FILE_NAME = 6
PENALTY_GAP_START = 3
PENALTY_GAP_EXTENSION = 1

_SEPARATORS = frozenset("/_-. ")


@by_value
@attrs.frozen(repr=False, eq=False)
class Candidate:
    path: str
    is_dir: bool


@by_value
@attrs.frozen(repr=False, eq=False)
class Match:
    root: str
    path: str
    is_dir: bool
    score: int
    indices: tuple[int, ...]

    def to_wire(self) -> dict[str, object]:
        """The reference's snake_case result entry."""
        return {
            "root": self.root,
            "path": self.path,
            "match_type": "directory" if self.is_dir else "file",
            "file_name": self.path.rsplit("/", 1)[-1],
            "score": self.score,
            "indices": list(self.indices),
        }


def _git_candidates(root: Path) -> list[Candidate] | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        inside = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=GIT_LIST_TIMEOUT,
            check=False,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        listed = subprocess.run(
            [git, "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=GIT_LIST_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    files: list[Candidate] = []
    dirs: set[str] = set()
    seen: set[str] = set()
    for raw in listed.stdout.split(b"\0"):
        if not raw:
            continue
        path = os.fsdecode(raw)
        if path in seen:
            continue
        seen.add(path)
        files.append(Candidate(path, False))
        parent = path.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
        if len(files) + len(dirs) >= MAX_CANDIDATES:
            break
    return files + [Candidate(d, True) for d in sorted(dirs)]


def _walk_candidates(root: Path) -> list[Candidate]:
    found: list[Candidate] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in dirnames:
            found.append(Candidate(prefix + name, True))
        for name in sorted(filenames):
            found.append(Candidate(prefix + name, False))
        if len(found) >= MAX_CANDIDATES:
            return found[:MAX_CANDIDATES]
    return found


def list_candidates(root: Path) -> list[Candidate]:
    """Everything a search under `root` considers; empty for a missing root. Blocking."""
    if not root.is_dir():
        return []
    from_git = _git_candidates(root)
    return from_git if from_git is not None else _walk_candidates(root)


def _bonus(path: str, i: int) -> int:
    if i == 0:
        return BONUS_BOUNDARY + BONUS_FIRST
    prev, ch = path[i - 1], path[i]
    if prev in _SEPARATORS:
        return BONUS_BOUNDARY + (2 if prev == "/" else 0)
    if prev.islower() and ch.isupper():
        return BONUS_BOUNDARY - 2
    if not prev.isdigit() and ch.isdigit():
        return BONUS_BOUNDARY // 2
    return 0


def score_path(query: str, path: str) -> tuple[int, tuple[int, ...]] | None:
    """The best alignment of `query` in `path` (score, character indices), or None."""
    needle = [c for c in query.lower() if not c.isspace()][:MAX_QUERY]
    if not needle:
        return None
    hay = path.lower()
    # Cheap rejection: the query must be a subsequence at all.
    pos = -1
    for c in needle:
        pos = hay.find(c, pos + 1)
        if pos < 0:
            return None
    name_start = path.rfind("/") + 1
    # best[j][i] = (score, previous index) for needle[j] matched at hay[i].
    prev_row: dict[int, tuple[int, int]] = {}
    rows: list[dict[int, tuple[int, int]]] = []
    first_possible = 0
    for j, c in enumerate(needle):
        row: dict[int, tuple[int, int]] = {}
        i = hay.find(c, first_possible)
        while i >= 0:
            here = SCORE_MATCH + _bonus(path, i) + (BONUS_FILE_NAME if i >= name_start else 0)
            if j == 0:
                row[i] = (here - min(i, 8) * PENALTY_GAP_EXTENSION, -1)
            else:
                best: tuple[int, int] | None = None
                for k, (s, _) in prev_row.items():
                    if k >= i:
                        continue
                    gap = i - k - 1
                    if gap == 0:
                        total = s + here + BONUS_CONSECUTIVE
                    else:
                        total = s + here - PENALTY_GAP_START - (gap - 1) * PENALTY_GAP_EXTENSION
                    if best is None or total > best[0]:
                        best = (total, k)
                if best is not None:
                    row[i] = best
            i = hay.find(c, i + 1)
        if not row:
            return None
        first_possible = min(row) + 1
        rows.append(row)
        prev_row = row
    end, (total, back) = max(prev_row.items(), key=lambda item: item[1][0])
    indices = [end]
    for row in reversed(rows[:-1]):
        indices.append(back)
        back = row[back][1]
    indices.reverse()
    # Shorter paths rank above longer ones with the same alignment.
    return max(total * 64 - len(path), 1), tuple(indices)


def search(query: str, roots: Iterable[tuple[str, list[Candidate]]], limit: int = MAX_RESULTS) -> list[Match]:
    """Score every candidate of every root; the best `limit`, highest score first."""
    if not query.strip():
        return []
    matches: list[Match] = []
    for root, candidates in roots:
        for candidate in candidates:
            scored = score_path(query, candidate.path)
            if scored is not None:
                matches.append(Match(root, candidate.path, candidate.is_dir, scored[0], scored[1]))
    matches.sort(key=lambda m: (-m.score, m.path, m.root))
    return matches[:limit]
