"""`review/start`: a code review run as a turn of the thread, with the reviewer's own prompt.

The review converses apart from the thread's history (the reviewer sees only its task, under
review guidelines instead of the base instructions, without the file-editing tool), as the
reference runs it in a sub-conversation. Around it the thread gets an `enteredReviewMode`
item (the target's label), an `exitedReviewMode` item and an agent message holding the
rendered result (the model's JSON findings as "[P2] title — file:start-end" comments), and
its history gets the result as a `<user_action>` message plus that answer, so a later turn
can act on the findings. On reload, `core.history.from_rollout` skips the reviewer's own
conversation (it lies between the two review-mode items).

Target prompts and labels are the reference's (clients show the labels); the review
guidelines are this project's text around the reference's output schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from codex_trio.core import item_events
from codex_trio.core.prompt import message
from codex_trio.ids import now_ms, uuid7
from codex_trio.protocol.items import AgentMessageItem, EnteredReviewModeItem, ExitedReviewModeItem
from codex_trio.records import by_value
from codex_trio.store import rollout

if TYPE_CHECKING:
    from codex_trio.core.turn import RunningTurn, ThreadRuntime

UNCOMMITTED_PROMPT = (
    "Review the current code changes (staged, unstaged, and untracked files) "
    "and provide prioritized findings."
)
BASE_BRANCH_PROMPT = (
    "Review the code changes against the base branch '{branch}'. The merge base commit for this "
    "comparison is {sha}. Run `git diff {sha}` to inspect the changes relative to {branch}. "
    "Provide prioritized, actionable findings."
)
BASE_BRANCH_FALLBACK_PROMPT = (
    "Review the code changes against the base branch '{branch}'. Start by finding the merge diff "
    "between the current branch and {branch}'s upstream e.g. (`git merge-base HEAD \"$(git rev-parse "
    '--abbrev-ref "{branch}@{{upstream}}")"`), then run `git diff` against that SHA to see what '
    "changes we would merge into the {branch} branch. Provide prioritized, actionable findings."
)
COMMIT_PROMPT = (
    "Review the code changes introduced by commit {sha}. Provide prioritized, actionable findings."
)
COMMIT_TITLE_PROMPT = (
    'Review the code changes introduced by commit {sha} ("{title}"). '
    "Provide prioritized, actionable findings."
)
#: the rendered result when the reviewer said nothing usable (the reference's text).
FALLBACK_RESULT = "Reviewer failed to output a response."

REVIEW_INSTRUCTIONS = """\
# Review guidelines:

You are reviewing a code change written by another engineer. Report the problems the author would
want to know about and would fix.

Flag an issue only when all of these hold:
1. It meaningfully affects correctness, security, performance or maintainability.
2. It is discrete and actionable, not a general remark about the codebase.
3. It was introduced by the change under review (do not report pre-existing problems).
4. It does not rest on unstated assumptions about the code or the author's intent; if you claim
   another part of the code breaks, name it.
5. It is clearly not an intentional change.

For each finding write a short comment: why it is a bug, in which circumstances it shows, and how
severe it is, in one matter-of-fact paragraph. Keep code excerpts to three lines at most, and point
at the shortest line range that shows the problem (rarely more than 5-10 lines).

Start every title with its priority: [P0] drop everything (blocks release or normal use, regardless
of inputs), [P1] urgent, [P2] normal, [P3] low. Also give the number in the "priority" field (0-3).
List every qualifying finding; when nothing qualifies, return no findings. Ignore style nits unless
they obscure meaning.

Finish with an overall verdict: the patch is correct when existing code and tests keep working and
it has no blocking bugs.

OUTPUT FORMAT:

## Output schema  — MUST MATCH *exactly*

```json
{
  "findings": [
    {
      "title": "<≤ 80 chars, imperative>",
      "body": "<valid Markdown explaining *why* this is a problem; cite files/lines/functions>",
      "confidence_score": <float 0.0-1.0>,
      "priority": <int 0-3, optional>,
      "code_location": {
        "absolute_file_path": "<file path>",
        "line_range": {"start": <int>, "end": <int>}
      }
    }
  ],
  "overall_correctness": "patch is correct" | "patch is incorrect",
  "overall_explanation": "<1-3 sentence explanation justifying the overall_correctness verdict>",
  "overall_confidence_score": <float 0.0-1.0>
}
```

* Answer with the JSON object only: no Markdown fences, no prose around it.
* code_location is required and must overlap the change under review.
* Do not write a fix.
"""


class ReviewTargetError(ValueError):
    """A `review/start` target that cannot be reviewed (the message goes to the client)."""


@by_value
@attrs.frozen(repr=False, eq=False)
class ResolvedReview:
    """What the reviewer is asked (`prompt`) and how clients label the review (`hint`)."""

    prompt: str
    hint: str


async def resolve_target(target: Mapping[str, Any], cwd: Path) -> ResolvedReview:
    """The prompt and label of a `ReviewTarget` (a base branch is resolved to its merge base)."""
    kind = target.get("type")
    if kind == "uncommittedChanges":
        return ResolvedReview(UNCOMMITTED_PROMPT, "current changes")
    if kind == "baseBranch":
        branch = _required(target, "branch")
        sha = await _merge_base(cwd, branch)
        template = BASE_BRANCH_PROMPT if sha else BASE_BRANCH_FALLBACK_PROMPT
        return ResolvedReview(template.format(branch=branch, sha=sha), f"changes against '{branch}'")
    if kind == "commit":
        sha = _required(target, "sha")
        title = target.get("title")
        short = sha[:7]
        if isinstance(title, str) and title.strip():
            return ResolvedReview(
                COMMIT_TITLE_PROMPT.format(sha=sha, title=title), f"commit {short}: {title}"
            )
        return ResolvedReview(COMMIT_PROMPT.format(sha=sha), f"commit {short}")
    if kind == "custom":
        instructions = _required(target, "instructions")
        return ResolvedReview(instructions, instructions.strip())
    raise ReviewTargetError(f"unknown review target type `{kind}`")


def _required(target: Mapping[str, Any], key: str) -> str:
    value = target.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReviewTargetError(f"{key} must not be empty")
    return value.strip() if key != "instructions" else value


async def _merge_base(cwd: Path, branch: str) -> str | None:
    """The merge base of HEAD and `branch` (its upstream first), or None outside a repository."""
    for ref in (f"{branch}@{{upstream}}", branch):
        try:
            result = await trio.run_process(
                ["git", "merge-base", "HEAD", ref],
                cwd=cwd,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        except OSError:
            return None
        sha = result.stdout.decode(errors="replace").strip()
        if result.returncode == 0 and sha:
            return sha
    return None


# ---------------------------------------------------------------------------- the result
def parse_output(text: str) -> dict[str, Any]:
    """The reviewer's JSON (also when wrapped in prose); plain text becomes the explanation."""
    for candidate in (text, text[text.find("{") : text.rfind("}") + 1] if "{" in text else ""):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {"findings": [], "overall_explanation": text}


def render(output: Mapping[str, Any]) -> str:
    """The result as the user reads it: the explanation, then one comment per finding."""
    sections: list[str] = []
    explanation = output.get("overall_explanation")
    if isinstance(explanation, str) and explanation.strip():
        sections.append(explanation.strip())
    findings = [f for f in output.get("findings") or [] if isinstance(f, Mapping)]
    if findings:
        lines = ["Review comment:" if len(findings) == 1 else "Review comments:"]
        for finding in findings:
            lines.append("")
            lines.append(f"- {finding.get('title', '')} — {_location(finding.get('code_location'))}")
            body = finding.get("body")
            if isinstance(body, str):
                lines.extend(f"  {line}" for line in body.splitlines())
        sections.append("\n".join(lines))
    return "\n\n".join(sections) if sections else FALLBACK_RESULT


def _location(location: Any) -> str:
    if not isinstance(location, Mapping):
        return ""
    path = location.get("absolute_file_path", "")
    lines = location.get("line_range")
    if isinstance(lines, Mapping):
        return f"{path}:{lines.get('start')}-{lines.get('end')}"
    return str(path)


def user_action_text(rendered: str) -> str:
    """The thread's record of the review (the reference's layout), for the next turns."""
    return (
        "<user_action>\n  <context>User initiated a review task. Here's the full review output from "
        "reviewer model. User may select one or more comments to resolve.</context>\n"
        f"  <action>review</action>\n  <results>\n  {rendered}\n  </results>\n  </user_action>\n"
    )


@by_value
@attrs.frozen(repr=False, eq=False)
class Review:
    """The body of a `review/start` turn (the turn's input is the review prompt)."""

    review: ResolvedReview

    async def run(self, turn: RunningTurn, runtime: ThreadRuntime) -> None:
        thread = turn.thread
        entered = EnteredReviewModeItem(uuid7(), self.review.hint, started_at_ms=now_ms())
        await item_events.started(thread, turn.id, entered)
        await item_events.finished(thread, turn.id, attrs.evolve(entered, completed_at_ms=now_ms()))
        turn.settings = attrs.evolve(
            turn.settings,
            base_instructions=REVIEW_INSTRUCTIONS,
            developer_instructions=None,
            collaboration_mode=None,
        )
        turn.excluded_tools = frozenset({"apply_patch"})
        turn.show_messages = False
        try:
            await turn.converse(runtime, [])
        finally:
            turn.show_messages = True
        answer = turn.last_agent_message.text if turn.last_agent_message is not None else ""
        rendered = render(parse_output(answer))
        exited = ExitedReviewModeItem(uuid7(), rendered, started_at_ms=now_ms())
        await item_events.started(thread, turn.id, exited)
        await item_events.finished(thread, turn.id, attrs.evolve(exited, completed_at_ms=now_ms()))
        result = AgentMessageItem(f"msg_{uuid7()}", started_at_ms=now_ms())
        await item_events.started(thread, turn.id, result)
        result = attrs.evolve(result, text=rendered, completed_at_ms=now_ms())
        await item_events.completed(thread, turn.id, result)
        turn.last_agent_message = result
        entries = [
            message("user", user_action_text(rendered)),
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": rendered}]},
        ]
        history = await runtime.load_history()
        history.extend(entries)
        await thread.append_rollout(
            [
                rollout.response_item(entries[0]),
                rollout.response_item(entries[1]),
                item_events.rollout_line(thread.id, turn.id, result),
            ]
        )
