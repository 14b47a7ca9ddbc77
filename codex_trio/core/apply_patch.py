"""The freeform patch format of the `apply_patch` tool: parse, plan, apply.

    *** Begin Patch
    *** Add File: path            then "+" lines: the new file's content
    *** Delete File: path
    *** Update File: path
    *** Move to: new/path         optional rename
    @@ optional context line      then " " (keep), "-" (remove), "+" (add) lines
    *** End of File               optional: the chunk ends at the end of the file
    *** End Patch

`parse_patch` is pure. `plan_patch` reads the files and computes every file's new content
(and the item's `changes` with diffs) without writing anything, so approval can show exactly
what will happen and a bad hunk fails before any file is touched. `apply_plan` then writes
each file atomically (a temporary file in the same directory, then `os.replace`).
Both do blocking file I/O: run them with `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import attrs

from codex_trio.atomic_files import write_atomic
from codex_trio.records import by_value

BEGIN = "*** Begin Patch"
END = "*** End Patch"
ADD = "*** Add File: "
DELETE = "*** Delete File: "
UPDATE = "*** Update File: "
MOVE = "*** Move to: "
EOF_MARKER = "*** End of File"


class PatchError(Exception):
    """A patch that does not parse or does not apply; the text is shown to the model."""


@by_value
@attrs.frozen(repr=False, eq=False)
class Chunk:
    """One `@@` section of an update: replace `old` (after `context`) with `new`."""

    context: str | None
    old: tuple[str, ...]
    new: tuple[str, ...]
    at_eof: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class AddFile:
    path: str
    content: str


@by_value
@attrs.frozen(repr=False, eq=False)
class DeleteFile:
    path: str


@by_value
@attrs.frozen(repr=False, eq=False)
class UpdateFile:
    path: str
    chunks: tuple[Chunk, ...]
    move_to: str | None = None


Hunk = AddFile | DeleteFile | UpdateFile


def parse_patch(text: str) -> list[Hunk]:
    """The hunks of a patch, or PatchError naming the offending line."""
    lines = _strip_wrapping(text.splitlines())
    if not lines or lines[0].strip() != BEGIN:
        raise PatchError("invalid patch: The first line of the patch must be '*** Begin Patch'")
    if lines[-1].strip() != END:
        raise PatchError("invalid patch: The last line of the patch must be '*** End Patch'")
    body = lines[1:-1]
    hunks: list[Hunk] = []
    i = 0
    while i < len(body):
        line = body[i]
        if line.startswith(ADD):
            path = line[len(ADD) :].strip()
            i += 1
            content: list[str] = []
            while i < len(body) and body[i].startswith("+"):
                content.append(body[i][1:])
                i += 1
            hunks.append(AddFile(path, "".join(f"{c}\n" for c in content)))
        elif line.startswith(DELETE):
            hunks.append(DeleteFile(line[len(DELETE) :].strip()))
            i += 1
        elif line.startswith(UPDATE):
            path = line[len(UPDATE) :].strip()
            i += 1
            move_to = None
            if i < len(body) and body[i].startswith(MOVE):
                move_to = body[i][len(MOVE) :].strip()
                i += 1
            chunks, i = _parse_chunks(body, i, path)
            if not chunks and move_to is None:
                raise PatchError(f"invalid hunk: Update file hunk for path '{path}' is empty")
            hunks.append(UpdateFile(path, tuple(chunks), move_to))
        elif not line.strip():
            i += 1
        else:
            raise PatchError(
                f"invalid hunk: '{line}' is not a valid hunk header. Valid hunk headers: "
                "'*** Add File: {path}', '*** Delete File: {path}', '*** Update File: {path}'"
            )
    if not hunks:
        raise PatchError("invalid patch: no files were changed")
    return hunks


def _strip_wrapping(lines: list[str]) -> list[str]:
    """Tolerate blank lines around the patch and a `<<'EOF'` heredoc around it."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if (
        len(lines) >= 2
        and lines[0].strip().startswith("<<")
        and lines[-1].strip() in ("EOF", "'EOF'", '"EOF"')
    ):
        lines = lines[1:-1]
    return lines


def _parse_chunks(body: list[str], i: int, path: str) -> tuple[list[Chunk], int]:
    chunks: list[Chunk] = []
    context: str | None = None
    old: list[str] = []
    new: list[str] = []
    started = False

    def flush(at_eof: bool = False) -> None:
        nonlocal old, new, context, started
        if old or new or at_eof:
            chunks.append(Chunk(context, tuple(old), tuple(new), at_eof))
        old, new, context, started = [], [], None, False

    while i < len(body):
        line = body[i]
        if line.startswith("*** ") and line.strip() != EOF_MARKER:
            break
        if line.strip() == EOF_MARKER:
            flush(at_eof=True)
            i += 1
            continue
        if line.startswith("@@"):
            if started or old or new:
                flush()
            header = line[2:].strip()
            context = header or None
            started = True
        elif line.startswith("-"):
            old.append(line[1:])
            started = True
        elif line.startswith("+"):
            new.append(line[1:])
            started = True
        elif line.startswith(" "):
            old.append(line[1:])
            new.append(line[1:])
            started = True
        elif line == "":
            # an empty line inside a chunk is an unchanged empty line
            old.append("")
            new.append("")
            started = True
        else:
            raise PatchError(
                f"invalid hunk: Unexpected line found in update hunk for '{path}': '{line}'. Every line "
                "should start with ' ' (context line), '+' (added line), or '-' (removed line)"
            )
        i += 1
    flush()
    return chunks, i


# ---------------------------------------------------------------------------- planning
@by_value
@attrs.frozen(repr=False, eq=False)
class FilePlan:
    """What happens to one file: `new_content` None deletes it; `source` is removed on a move."""

    kind: str  # add | delete | update
    path: Path
    old_content: str | None
    new_content: str | None
    move_to: Path | None = None
    #: the path as the patch wrote it (what the success text lists).
    label: str = ""

    @property
    def diff(self) -> str:
        """The item's `diff`: the content for an add or delete, a unified diff otherwise."""
        if self.kind == "add":
            return self.new_content or ""
        if self.kind == "delete":
            return self.old_content or ""
        return unified_diff(self.old_content or "", self.new_content or "", context=1, headers=False)

    @property
    def letter(self) -> str:
        return {"add": "A", "delete": "D"}.get(self.kind, "M")


def resolve(cwd: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else cwd / candidate


def plan_patch(hunks: Sequence[Hunk], cwd: Path) -> list[FilePlan]:
    """Every file's change, computed from the files as they are now. Blocking."""
    plans: list[FilePlan] = []
    for hunk in hunks:
        path = resolve(cwd, hunk.path)
        if isinstance(hunk, AddFile):
            plans.append(FilePlan("add", path, None, hunk.content, label=hunk.path))
        elif isinstance(hunk, DeleteFile):
            plans.append(FilePlan("delete", path, _read(path, "delete"), None, label=hunk.path))
        else:
            old = _read(path, "update")
            new = apply_chunks(old, hunk.chunks, hunk.path)
            move_to = resolve(cwd, hunk.move_to) if hunk.move_to else None
            plans.append(FilePlan("update", path, old, new, move_to, label=hunk.move_to or hunk.path))
    return plans


def _read(path: Path, action: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PatchError(
            f"Failed to read file to {action} {path}: No such file or directory (os error 2)"
        ) from None
    except IsADirectoryError:
        raise PatchError(f"Failed to read file to {action} {path}: Is a directory (os error 21)") from None
    except UnicodeDecodeError:
        raise PatchError(
            f"Failed to read file to {action} {path}: stream did not contain valid UTF-8"
        ) from None


def apply_chunks(content: str, chunks: Sequence[Chunk], label: str) -> str:
    """Apply update chunks to `content`; PatchError when a chunk's lines are not found."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    replacements: list[tuple[int, int, tuple[str, ...]]] = []
    cursor = 0
    for chunk in chunks:
        if chunk.context is not None:
            found = _seek(lines, (chunk.context,), cursor, at_eof=False)
            if found is None:
                raise PatchError(f"Failed to find context '{chunk.context}' in {label}")
            cursor = found + 1
        if not chunk.old:
            # pure insertion: at the end of the file (or right after the context line)
            at = len(lines) if chunk.context is None else cursor
            replacements.append((at, 0, chunk.new))
            continue
        old, new = chunk.old, chunk.new
        found = _seek(lines, old, cursor, at_eof=chunk.at_eof)
        if found is None and old and old[-1] == "":
            # the model often ends a chunk with an empty line that the file does not have
            old, new = old[:-1], new[:-1] if new and new[-1] == "" else new
            found = _seek(lines, old, cursor, at_eof=chunk.at_eof)
        if found is None:
            raise PatchError(f"Failed to find expected lines in {label}:\n" + "\n".join(chunk.old))
        replacements.append((found, len(old), new))
        cursor = found + len(old)
    for start, length, new in sorted(replacements, key=lambda r: r[0], reverse=True):
        lines[start : start + length] = list(new)
    return "\n".join(lines) + "\n" if lines else ""


def _seek(lines: list[str], pattern: Sequence[str], start: int, *, at_eof: bool) -> int | None:
    """Where `pattern` occurs from `start`: exact, then ignoring trailing, then all whitespace."""
    if not pattern:
        return start
    if len(pattern) > len(lines):
        return None
    first = len(lines) - len(pattern) if at_eof else start
    last = len(lines) - len(pattern)
    for normalize in (lambda s: s, str.rstrip, str.strip, _unify_punctuation):
        want = [normalize(p) for p in pattern]
        for i in range(max(first, 0), last + 1):
            if all(normalize(lines[i + k]) == want[k] for k in range(len(pattern))):
                return i
    return None


def _unify_punctuation(text: str) -> str:
    table = {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00a0": " ",
    }
    return "".join(table.get(c, c) for c in text.strip())


# ---------------------------------------------------------------------------- applying
def apply_plan(plans: Sequence[FilePlan]) -> str:
    """Write every planned change (each file atomically); returns the tool's success text."""
    for plan in plans:
        if plan.kind == "delete":
            plan.path.unlink()
            continue
        target = plan.move_to or plan.path
        write_atomic(target, plan.new_content or "")
        if plan.move_to is not None and plan.move_to != plan.path:
            plan.path.unlink()
    summary = "".join(f"{p.letter} {_display(p)}\n" for p in plans)
    return f"Success. Updated the following files:\n{summary}"


def _display(plan: FilePlan) -> str:
    return plan.label or str(plan.move_to or plan.path)


def unified_diff(
    old: str, new: str, *, context: int = 3, headers: bool = True, old_name: str = "a", new_name: str = "b"
) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name, n=context
    )
    out = []
    for line in lines:
        if not headers and (line.startswith("---") or line.startswith("+++")):
            continue
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def git_diff(plans: Sequence[FilePlan], cwd: Path) -> str:
    """A git-style diff of the changes, paths relative to `cwd` when inside it."""
    parts = []
    for plan in plans:
        old_path = _relative(plan.path, cwd)
        new_path = _relative(plan.move_to or plan.path, cwd)
        if plan.kind == "add":
            body = unified_diff("", plan.new_content or "", old_name="/dev/null", new_name=f"b/{new_path}")
            parts.append(f"diff --git a/{new_path} b/{new_path}\nnew file mode 100644\n{body}")
        elif plan.kind == "delete":
            body = unified_diff(plan.old_content or "", "", old_name=f"a/{old_path}", new_name="/dev/null")
            parts.append(f"diff --git a/{old_path} b/{old_path}\ndeleted file mode 100644\n{body}")
        else:
            body = unified_diff(
                plan.old_content or "",
                plan.new_content or "",
                old_name=f"a/{old_path}",
                new_name=f"b/{new_path}",
            )
            rename = f"rename from {old_path}\nrename to {new_path}\n" if old_path != new_path else ""
            parts.append(f"diff --git a/{old_path} b/{new_path}\n{rename}{body}")
    return "".join(parts)


def _relative(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path).lstrip("/")
