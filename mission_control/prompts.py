"""What a run is told: the prompt (a preamble, the ticket, the reviewer's feedback or why the last run
died), argv templates filled in without any shell, and the stable session id of a ticket's worker."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from mission_control.config import PLACEHOLDER

SESSION_NAMESPACE = uuid.UUID("5b0b3c2e-4d1f-4f5e-9a51-6d6d1c0a3b77")


def render(template: tuple[str, ...] | list[str], values: Mapping[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders in each argv element; other braces stay as they are."""

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [PLACEHOLDER.sub(fill, arg) for arg in template]


def session_id(database_id: str, ticket_key: str, profile: str) -> str:
    """A UUID stable per ticket and worker profile (and MC database), for agent CLIs to resume."""
    return str(uuid.uuid5(SESSION_NAMESPACE, f"{database_id}:{ticket_key}:{profile}"))


def _texts(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, (list, tuple)) else []


def build_prompt(
    key: str,
    title: str,
    body: str,
    feedback: Mapping[str, object] | None,
    workdir: Path,
    branch: str | None,
    decides_done: bool,
    last_death: str | None = None,
) -> str:
    """The prompt an agent receives as its user message: the rules of the run (where it works, how
    it reports), the ticket's title and body, and, on a redispatch, the reviewer's reasons and gaps
    or why the last run ended.

    ``decides_done``: Mission Control takes the branch's new commit as the result (agent presets);
    otherwise the agent reports it with a ``DONE: <sha>`` line.
    """
    where = f"{workdir}" + (f", on branch {branch}" if branch else "")
    if decides_done:
        finish = (
            f"- When you are done, commit your change with git (do not push, do not switch branches). "
            f"The new commit on {branch} is your result; a run that ends without one counts as failed."
        )
    else:
        finish = "- When you are done, commit your change and print one line `DONE: <sha>` with the commit's sha."
    lines = [
        f"You are working unattended on ticket {key} for Mission Control.",
        "",
        f"- Work only in this directory: {where}.",
        finish,
        "- Nobody can answer questions during this run: decide, and say what you assumed in the commit message.",
        "",
        f"## Ticket {key}: {title}".rstrip(),
        "",
        body.rstrip(),
    ]
    prompt = "\n".join(lines).rstrip() + "\n"
    answer = feedback.get("answer") if feedback else None
    if isinstance(answer, Mapping):
        prompt += _answer(answer)
    if feedback and ("reasons" in feedback or "gaps" in feedback):
        reasons = _texts(feedback.get("reasons"))
        gaps = _texts(feedback.get("gaps"))
        lines = [
            f"\n## Reviewer feedback: your previous commit {str(feedback.get('sha', ''))[:12]} was sent back\n",
            "### Reasons",
        ]
        lines += [f"- {r}" for r in reasons] or ["- (none given)"]
        lines += ["", "### Gaps"]
        lines += [f"- {g}" for g in gaps] or ["- (none given)"]
        prompt += "\n".join(lines) + "\n"
    if last_death:
        prompt += f"\n## Your last run ended without a result\n\n{last_death}\n"
    return prompt


def _answer(answer: Mapping[str, object]) -> str:
    """A person's answer to the ticket's escalation, under its own heading, with why it was escalated."""
    lines = [f"\n## {str(answer.get('by') or 'A person')} answered\n"]
    escalated = str(answer.get("escalated") or "").strip()
    if escalated:
        quoted = [f"> {line}" for line in escalated.splitlines()]
        lines += ["The ticket was handed to a person because:", "", *quoted, ""]
    lines += ["Their answer:", "", str(answer.get("text") or "").rstrip(), ""]
    return "\n".join(lines)
