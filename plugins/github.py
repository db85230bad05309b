"""GitHub: labelled issues in as tickets, done work out as a pull request, checks and reviews back.

    plugins:
      github:
        repo: acme/app                       # owner/name
        labels: [mc]                         # open issues with all of these become tickets
        api_url: https://api.github.com      # GitHub Enterprise, or a local test server
        clone_url: https://github.com/acme/app.git   # default from repo
        token_env: GITHUB_TOKEN              # the variable holding the token; never the token in config
        poll_interval: 60                    # seconds between looks (conditional requests: a 304 is free)
        draft: true                          # open pull requests as drafts
        logins: {elmar: elmar-gh}            # escalation.owner -> the GitHub login mentioned on the issue

The token reaches GitHub through githubkit (REST, typed, ETag caching, rate-limit errors that say when
to come back) and git through ``repository_env``: for Mission Control's own fetch and push on the
controller only, never a run's environment, a file, a log or a prompt. Everything read from GitHub is
untrusted text: it becomes a ticket's body or a gap for the agent, never a command.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mc_hooks import hookimpl
from mc_hooks.settings import ConfigError
from mc_hooks.work import Answer, Delivered, Feedback, TryLater, WorkItem, WorkNews

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import Ticket

MARK = "<!-- mission-control -->"  # on every comment and pull request Mission Control writes
FAILED = ("failure", "timed_out", "cancelled", "action_required", "startup_failure")
WRITERS = ("admin", "maintain", "write")
TAIL_LINES = 40
TAIL_CHARS = 4000
ANSWER = re.compile(r"\A\s*/mc\s+answer\s+(?P<text>.+)", re.DOTALL)


class GitHub:
    """``list_work_items``, ``deliver_work``, ``read_work_news``, ``repository_env``, ``on_escalate`` and
    ``doctor_checks`` for one repository."""

    def __init__(self, settings: Section) -> None:
        self.repo = settings.text("repo", None, pattern=r"^[\w.-]+/[\w.-]+$", what="owner/name")
        self.owner, self.name = self.repo.split("/", 1)
        self.labels = settings.text_list("labels", ["mc"]) or []
        self.api_url = settings.text("api_url", "https://api.github.com").rstrip("/")
        self.clone_url = settings.text("clone_url", f"https://github.com/{self.repo}.git")
        self.token_env = settings.text("token_env", "GITHUB_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
        self.poll_interval = settings.number("poll_interval", 60.0, minimum=1.0, strict=False)
        self.draft = settings.flag("draft", True)
        logins = settings.mapping("logins")
        self.logins = {str(name): str(logins[name]) for name in logins}
        self.source_prefix = f"github:{self.repo}#"
        token = os.environ.get(self.token_env, "")
        if not token:
            raise ConfigError(f"{settings.file}: {settings.path}.token_env: ${self.token_env} is not set (the token)")
        self._token = token
        try:
            from githubkit import GitHub as Client
        except ImportError:
            raise ConfigError(
                f"{settings.file}: {settings.path}: the github plugin needs githubkit: pip install 'mc-hooks[github]'"
            ) from None
        # No automatic retries: a rate limit or an outage is waited out by the sync pass, never by sleeping
        # inside a call (that would hold up every other ticket's sync).
        self.gh = Client(token, base_url=self.api_url, auto_retry=False, timeout=20.0, http_cache=True)
        self.next_list = 0.0
        self.listed_at: str | None = None  # ISO time of the last full look (later looks ask for changes since)
        self.next_news: dict[int, float] = {}
        self._login: str | None = None

    # -- in ------------------------------------------------------------------------------------

    @hookimpl
    def list_work_items(self) -> list[WorkItem] | None:
        now = time.time()
        if now < self.next_list:
            return None
        started = _iso(now - 5)  # a little overlap: an edit during the look is seen next time
        query: dict[str, Any] = {"labels": ",".join(self.labels), "per_page": 100}
        query.update({"state": "all", "since": self.listed_at} if self.listed_at else {"state": "open"})
        issues = self._all(self.gh.rest.issues.list_for_repo, owner=self.owner, repo=self.name, **query)
        self.next_list = now + self.poll_interval
        self.listed_at = started
        return [self._item(issue) for issue in issues if "pull_request" not in issue]

    def _item(self, issue: dict[str, Any]) -> WorkItem:
        closed_by = (issue.get("closed_by") or {}).get("login", "")
        return WorkItem(
            source=f"{self.source_prefix}{issue['number']}",
            title=str(issue.get("title") or ""),
            body=str(issue.get("body") or ""),
            url=str(issue.get("html_url") or ""),
            repo=self.clone_url,
            open=issue.get("state") == "open",
            closed_by=str(closed_by),
        )

    # -- out -----------------------------------------------------------------------------------

    @hookimpl
    def repository_env(self, url: str) -> dict[str, str] | None:
        if url != self.clone_url:
            return None
        if not url.startswith(("https://", "http://")):
            return {}
        basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{url}.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }

    @hookimpl
    def secret_env(self) -> list[str]:
        return [self.token_env]

    @hookimpl
    def deliver_work(self, ticket: Ticket, controller: Controller) -> Delivered | None:
        number = self._number(ticket)
        if number is None or not ticket.done_sha:
            return None
        branch = ticket.branch or f"mc/{ticket.key}"
        controller.push_done_work(ticket, self.clone_url, branch)
        pull: Mapping[str, object] | None = self._open_pull(branch)
        if pull is None:
            base = self.gh.rest.repos.get(self.owner, self.name).json()["default_branch"]
            created = self.gh.rest.pulls.create(
                self.owner,
                self.name,
                title=f"{ticket.title} (#{number})",
                head=branch,
                base=base,
                body=redacted(self._pull_body(ticket, controller, number)),
                draft=self.draft,
            )
            pull = created.json()
        self._comment_once(number, f"mc:pull:{pull['number']}", f"Mission Control opened {pull['html_url']} for this.")
        return Delivered(url=str(pull["html_url"]), sha=ticket.done_sha, ref=f"pull/{pull['number']}")

    def _open_pull(self, branch: str) -> Mapping[str, object] | None:
        found = self.gh.rest.pulls.list(self.owner, self.name, head=f"{self.owner}:{branch}", state="open")
        pulls = found.json()
        return pulls[0] if pulls else None

    def _pull_body(self, ticket: Ticket, controller: Controller, number: int) -> str:
        review = controller.review_for(ticket, ticket.done_sha)
        verdict = "no review recorded"
        if review is not None:
            reasons = "\n".join(f"  - {reason}" for reason in review.reasons)
            verdict = f"**{review.verdict}** by {review.reviewer}" + (f"\n{reasons}" if reasons else "")
        spent = controller.spent_on(ticket)
        return (
            f"Closes #{number}\n\n"
            f"Made by Mission Control for ticket {ticket.key}.\n\n"
            f"- Review: {verdict}\n"
            f"- Runs: {ticket.attempts}, cost ${spent:.2f}\n\n{MARK}"
        )

    # -- news ----------------------------------------------------------------------------------

    @hookimpl
    def read_work_news(self, ticket: Ticket, delivered: Delivered | None, controller: Controller) -> WorkNews | None:
        number = self._number(ticket)
        if number is None:
            return None
        now = time.time()
        if now < self.next_news.get(ticket.id, 0.0):
            return WorkNews()
        self.next_news[ticket.id] = now + self.poll_interval
        answers = self._answers(ticket, number, controller) if ticket.status == "needs_input" else ()
        if delivered is None or not delivered.ref.startswith("pull/"):
            return WorkNews(answers=answers)
        pull = self.gh.rest.pulls.get(self.owner, self.name, int(delivered.ref.split("/", 1)[1])).json()
        if pull.get("merged") or pull.get("merged_at"):
            return WorkNews(state="merged", sha=delivered.sha, answers=answers)
        if pull.get("state") == "closed":
            return WorkNews(state="closed", sha=delivered.sha, answers=answers)
        head = (pull.get("head") or {}).get("sha")
        if head != delivered.sha:  # our push has not landed there yet, or someone else pushed
            return WorkNews(state="open", sha=delivered.sha, answers=answers)
        feedback = (*self._failed_checks(head), *self._changes_requested(int(pull["number"])))
        return WorkNews(state="open", sha=head, feedback=feedback, answers=answers)

    def _failed_checks(self, sha: str) -> tuple[Feedback, ...]:
        """The failed check runs on ``sha``, once all of its checks have completed (none while any runs)."""
        runs = self._all(
            self.gh.rest.checks.list_for_ref, owner=self.owner, repo=self.name, ref=sha, per_page=100, key="check_runs"
        )
        if not runs or any(run.get("status") != "completed" for run in runs):
            return ()
        return tuple(
            Feedback(id=f"check:{run['id']}", text=_check_text(run)) for run in runs if run.get("conclusion") in FAILED
        )

    def _changes_requested(self, number: int) -> tuple[Feedback, ...]:
        """Each review that asked for changes, by someone other than Mission Control, with its comments."""
        mine = self.login()
        found = []
        for review in self._all(self.gh.rest.pulls.list_reviews, owner=self.owner, repo=self.name, pull_number=number):
            who = (review.get("user") or {}).get("login", "")
            if review.get("state") != "CHANGES_REQUESTED" or who == mine:
                continue
            comments = self._all(
                self.gh.rest.pulls.list_comments_for_review,
                owner=self.owner,
                repo=self.name,
                pull_number=number,
                review_id=review["id"],
            )
            lines = [f"Review by {who} asked for changes: {review.get('body') or '(no summary)'}"]
            for comment in comments:
                where = f"{comment.get('path')}:{comment.get('line') or comment.get('original_line') or '?'}"
                lines.append(f"- {where}: {comment.get('body') or ''}")
            found.append(Feedback(id=f"review:{review['id']}", text="\n".join(lines)))
        return tuple(found)

    def _answers(self, ticket: Ticket, number: int, controller: Controller) -> tuple[Answer, ...]:
        """``/mc answer <text>`` comments since the ticket's last escalation, from people with write access."""
        escalations = controller.escalations(ticket)
        since = _iso(escalations[-1].created_at - 1) if escalations else None
        query: dict[str, Any] = {"per_page": 100, **({"since": since} if since else {})}
        comments = self._all(
            self.gh.rest.issues.list_comments, owner=self.owner, repo=self.name, issue_number=number, **query
        )
        mine, found = self.login(), []
        for comment in comments:
            who = (comment.get("user") or {}).get("login", "")
            body = str(comment.get("body") or "")
            asked = ANSWER.match(body)
            if asked is None or who == mine or MARK in body or not self._may_write(who):
                continue
            found.append(Answer(id=f"comment:{comment['id']}", by=who, text=asked.group("text").strip()))
        return tuple(found)

    def _may_write(self, login: str) -> bool:
        level = self.gh.rest.repos.get_collaborator_permission_level(self.owner, self.name, login).json()
        return level.get("permission") in WRITERS or (level.get("role_name") in WRITERS)

    # -- people --------------------------------------------------------------------------------

    @hookimpl
    def on_escalate(self, ticket: Ticket, reason: str, owner: str) -> None:
        number = self._number(ticket)
        if number is None:
            return
        login = self.logins.get(owner)
        who = f"@{login}" if login else owner
        body = (
            f"{who}: Mission Control needs a person for {ticket.key}.\n\n> "
            + "\n> ".join(redacted(reason).splitlines() or [""])
            + "\n\nAnswer with a comment `/mc answer <your answer>` (from someone with write access), "
            f'or `mc ticket answer {ticket.key} "..."`.\n\n{MARK}'
        )
        self.gh.rest.issues.create_comment(self.owner, self.name, number, body=body)

    @hookimpl
    def doctor_checks(self) -> list[tuple[bool, str]]:
        try:
            user = self.gh.rest.users.get_authenticated()
            limit = self.gh.rest.rate_limit.get().json()
        except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
            return [(False, f"{self.api_url}: {_why(exc)}")]
        scopes = user.headers.get("x-oauth-scopes")
        core = (limit.get("resources") or {}).get("core") or limit.get("rate") or {}
        lines = [(True, f"token valid for {user.json().get('login')} at {self.api_url}")]
        lines.append((True, f"scopes: {scopes if scopes is not None else '(fine-grained token: not listed)'}"))
        lines.append((core.get("remaining", 1) > 0, f"rate limit: {core.get('remaining')} of {core.get('limit')} left"))
        return lines

    # -- GitHub ---------------------------------------------------------------------------------

    def login(self) -> str:
        """Mission Control's own login (its comments and reviews are never feedback or answers)."""
        if self._login is None:
            self._login = str(self.gh.rest.users.get_authenticated().json().get("login") or "")
        return self._login

    def _number(self, ticket: Ticket) -> int | None:
        source = ticket.source or ""
        if not source.startswith(self.source_prefix):
            return None
        digits = source[len(self.source_prefix) :]
        return int(digits) if digits.isdigit() else None

    def _comment_once(self, number: int, tag: str, text: str) -> None:
        """A comment on the issue, unless one carrying ``tag`` is there already (a delivery repeated after a
        crash does not comment twice)."""
        marker = f"<!-- {tag} -->"
        for comment in self._all(
            self.gh.rest.issues.list_comments, owner=self.owner, repo=self.name, issue_number=number, per_page=100
        ):
            if marker in str(comment.get("body") or ""):
                return
        self.gh.rest.issues.create_comment(self.owner, self.name, number, body=f"{text}\n\n{marker}\n{MARK}")

    def _all(self, method: Any, key: str | None = None, **query: Any) -> list[dict[str, Any]]:
        """Every page of a listing (following ``Link: rel="next"``), as JSON."""

        def page(response: Any) -> list[Any]:
            data = response.json()
            return list(data.get(key, []) if key else data)

        return list(self._guard(lambda: list(self.gh.rest.paginate(method, map_func=page, **query))))

    def _guard(self, call: Any) -> Any:
        """``call()``, with a rate limit turned into :class:`TryLater` (wait until it resets)."""
        from githubkit.exception import RateLimitExceeded

        try:
            return call()
        except RateLimitExceeded as exc:
            raise TryLater(exc.retry_after.total_seconds(), f"GitHub rate limit: {_why(exc)}") from None


# Shapes of credentials an agent could read in its own HOME (its login) and try to carry out through text
# Mission Control posts on GitHub (an escalation's reason can quote a reviewer): never posted.
SECRET_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
)
SECRET_NAMES = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def redacted(text: str) -> str:
    """``text`` with credential-shaped strings and the values of the controller's secret-named environment
    variables replaced by ``[redacted]``: what Mission Control writes on GitHub is public to the repository's
    readers, and part of it (a reason) may quote an agent."""
    for name, value in os.environ.items():
        if len(value) >= 8 and SECRET_NAMES.search(name) and value in text:
            text = text.replace(value, "[redacted]")
    return SECRET_SHAPES.sub("[redacted]", text)


def _check_text(run: dict[str, Any]) -> str:
    """A failed check as a gap: its name and conclusion, its summary, and the tail of its output."""
    output = run.get("output") or {}
    parts = [f"Check `{run.get('name')}` {run.get('conclusion')} on GitHub."]
    if output.get("title"):
        parts.append(str(output["title"]))
    if output.get("summary"):
        parts.append(str(output["summary"]).strip())
    text = str(output.get("text") or "").strip()
    if text:
        tail = "\n".join(text.splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]
        parts.append(f"Last lines of its output:\n```\n{tail}\n```")
    if len(parts) == 1:
        parts.append(f"GitHub gave no output for it; its page: {run.get('html_url') or run.get('details_url')}")
    return "\n\n".join(parts)


def _why(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            message = response.json().get("message")
        except Exception:  # noqa: BLE001 - not JSON
            message = None
        return f"HTTP {response.status_code}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
