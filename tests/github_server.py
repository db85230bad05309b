"""A scripted GitHub REST server for the github plugin's tests, on 127.0.0.1.

It keeps one repository's issues (with labels and comments), pull requests (whose head follows the
branch in a real bare git repository, the remote the plugin pushes to), reviews with their comments,
check runs per commit and collaborators' permissions, and answers the REST calls the plugin makes the way
GitHub does: JSON bodies of the same shape, pagination by ``page``/``per_page`` with ``Link`` headers,
``ETag`` and ``304 Not Modified`` for a matching ``If-None-Match``, rate-limit headers on every
response, and GitHub's error bodies (``{"message", "documentation_url"}``) for 401, 403 rate limits,
404, 422. A test scripts failures (``fail``) and reads every request (``requests``).

Usage::

    gh = GitHubServer("acme/app", remote=bare_repo_path, token="t0k3n")
    gh.issue("Add a greeting", body="...", labels=["mc"])
    ... point the plugin's api_url at gh.url ...
    gh.requests_to("POST", "/repos/acme/app/pulls")
    gh.close()
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

DOCS = "https://docs.github.com/rest"


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Failure:
    """A scripted failure: the next ``times`` requests matching ``method`` and ``path`` (a regex) get it."""

    method: str
    path: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int
    delay: float = 0.0


@dataclass
class Repo:
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)


class GitHubServer:
    """The scripted server (see the module's docstring). ``login`` is who the token belongs to."""

    def __init__(
        self,
        repo: str,
        remote: Path,
        token: str = "ghp_test_token",
        login: str = "mc-bot",
        default_branch: str = "main",
        rate_limit: int = 5000,
        cache_seconds: int = 0,
    ) -> None:
        """``cache_seconds`` is the ``max-age`` of GET responses (GitHub's is 60; 0 here, so every look
        is a conditional request a test can see)."""
        self.full_name = repo
        self.owner, self.name = repo.split("/")
        self.remote = Path(remote)
        self.token = token
        self.login = login
        self.default_branch = default_branch
        self.rate_limit = rate_limit
        self.cache_seconds = cache_seconds
        self.remaining = rate_limit
        self.state = Repo(permissions={login: "write"})
        self.numbers = itertools.count(1)
        self.ids = itertools.count(1000)
        self.failures: list[Failure] = []
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PATCH(self) -> None:
                server._handle(self, "PATCH")

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    # -- the test's side -----------------------------------------------------------------------

    def issue(
        self, title: str, body: str = "", labels: tuple[str, ...] | list[str] = ("mc",), user: str = "alice"
    ) -> int:
        """Open an issue; returns its number."""
        with self.lock:
            number = next(self.numbers)
            self.state.issues[number] = {
                "id": next(self.ids),
                "number": number,
                "title": title,
                "body": body,
                "state": "open",
                "labels": [{"name": name} for name in labels],
                "user": {"login": user},
                "html_url": f"https://github.example/{self.full_name}/issues/{number}",
                "created_at": _iso(time.time()),
                "updated_at": _iso(time.time()),
                "closed_by": None,
            }
            self.state.comments[number] = []
            return number

    def edit_issue(self, number: int, **fields: Any) -> None:
        with self.lock:
            self.state.issues[number].update(fields, updated_at=_iso(time.time() + 1))

    def close_issue(self, number: int, by: str = "alice") -> None:
        self.edit_issue(number, state="closed", closed_by={"login": by})

    def comment(self, number: int, body: str, user: str = "alice") -> int:
        """A person's comment on an issue or pull request; returns its id."""
        with self.lock:
            found = {"id": next(self.ids), "body": body, "user": {"login": user}, "created_at": _iso(time.time())}
            found["updated_at"] = found["created_at"]
            self.state.comments.setdefault(number, []).append(found)
            self.state.issues[number]["updated_at"] = _iso(time.time() + 1)
            return int(found["id"])

    def open_pull(self, title: str, head: str, user: str = "alice") -> int:
        """A person's pull request from ``head`` (a branch in the remote) to the default branch; returns
        its number (GitHub lists it among the issues too)."""
        status, pull, _ = self._create_pull({"title": title, "head": head, "base": self.default_branch}, user)
        assert status == 201, pull
        return int(pull["number"])

    def pulls(self) -> list[dict[str, Any]]:
        """The pull requests, as GitHub shows them."""
        with self.lock:
            return [self._pull_json(p) for p in self.state.issues.values() if "head" in p]

    def check_run(
        self, sha: str, name: str, conclusion: str | None, title: str = "", summary: str = "", text: str = ""
    ) -> None:
        """A check run on ``sha`` (``conclusion`` None: still in progress)."""
        with self.lock:
            run = {
                "id": next(self.ids),
                "name": name,
                "head_sha": sha,
                "status": "completed" if conclusion else "in_progress",
                "conclusion": conclusion,
                "output": {"title": title or None, "summary": summary or None, "text": text or None},
                "html_url": f"https://github.example/{self.full_name}/runs/{name}",
            }
            self.state.check_runs.setdefault(sha, []).append(run)

    def finish_check_run(self, sha: str, name: str, conclusion: str) -> None:
        """The in-progress check run ``name`` on ``sha`` completes with ``conclusion``."""
        with self.lock:
            for run in self.state.check_runs.get(sha, []):
                if run["name"] == name:
                    run.update(status="completed", conclusion=conclusion)

    def review(
        self, number: int, state: str, body: str, user: str = "bob", comments: tuple[tuple[str, int, str], ...] = ()
    ) -> int:
        """A review on pull request ``number`` (``CHANGES_REQUESTED``, ``APPROVED``, ``COMMENTED``), with
        ``(path, line, body)`` comments; returns its id."""
        with self.lock:
            review_id = next(self.ids)
            head = self._head(self.state.issues[number]["head"]["ref"])
            self.state.reviews.setdefault(number, []).append(
                {"id": review_id, "user": {"login": user}, "state": state, "body": body, "commit_id": head}
            )
            self.state.review_comments[review_id] = [
                {"id": next(self.ids), "path": path, "line": line, "body": text} for path, line, text in comments
            ]
            return review_id

    def merge(self, number: int) -> None:
        """Merge pull request ``number``: the default branch moves to its head in the remote."""
        with self.lock:
            pull = self.state.issues[number]
            head = self._head(pull["head"]["ref"])
            _git(self.remote, "update-ref", f"refs/heads/{self.default_branch}", head)
            pull.update(state="closed", merged=True, merged_at=_iso(time.time()), merge_commit_sha=head)
            pull["updated_at"] = _iso(time.time() + 1)

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        message: str = "",
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """The next ``times`` requests matching ``method`` and the regex ``path`` get ``status`` with
        GitHub's error body; ``delay`` seconds first (a slow server)."""
        body = {"message": message or _REASONS.get(status, "Error"), "documentation_url": DOCS}
        self.failures.append(Failure(method, path, status, body, dict(headers or {}), times, delay))

    def rate_limited(self, reset_in: float, times: int = 1, path: str = ".*") -> None:
        """GitHub's primary rate limit: 403, ``x-ratelimit-remaining: 0`` and the reset time."""
        reset = str(int(time.time() + reset_in))
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
        self.fail("GET", path, 403, "API rate limit exceeded for user ID 1.", headers, times)

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        """The recorded requests with this method whose path matches the regex ``path``."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    # -- serving ---------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        recorded = Recorded(method, parts.path, query, headers, body)
        with self.lock:
            self.requests.append(recorded)
        status, payload, extra = self._answer(method, parts.path, query, headers, body)
        self._send(handler, status, payload, extra, recorded)

    def _answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        failure = next(
            (f for f in self.failures if f.times > 0 and f.method == method and re.fullmatch(f.path, path)), None
        )
        if failure is not None:
            failure.times -= 1
            if failure.delay:
                time.sleep(failure.delay)
            return failure.status, failure.body, failure.headers
        auth = headers.get("authorization", "")
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {"message": "Bad credentials", "documentation_url": DOCS}, {}
        with self.lock:
            self.remaining = max(0, self.remaining - 1)
            try:
                return self._route(method, path, query, body)
            except KeyError:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        if path == "/user":
            return 200, {"login": self.login, "id": 1, "type": "Bot"}, {"x-oauth-scopes": "repo"}
        if path == "/rate_limit":
            core = {"limit": self.rate_limit, "remaining": self.remaining, "reset": int(time.time()) + 3600, "used": 0}
            return 200, {"resources": {"core": core}, "rate": core}, {}
        prefix = f"/repos/{self.owner}/{self.name}"
        if not path.startswith(prefix):
            raise KeyError(path)
        rest = path[len(prefix) :]
        state = self.state
        if rest == "" and method == "GET":
            return 200, {"full_name": self.full_name, "default_branch": self.default_branch, "private": True}, {}
        if rest == "/issues" and method == "GET":
            return self._page(path, self._issues(query), query)
        found = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if found and method == "GET":
            since = query.get("since")
            comments = [c for c in state.comments[int(found.group(1))] if not since or c["updated_at"] >= since]
            return self._page(path, comments, query)
        if found and method == "POST":
            return 201, self._new_comment(int(found.group(1)), body), {}
        if rest == "/pulls" and method == "GET":
            pulls = [self._pull_json(p) for p in state.issues.values() if "head" in p]
            if query.get("state", "open") != "all":
                pulls = [p for p in pulls if p["state"] == query.get("state", "open")]
            if "head" in query:
                pulls = [p for p in pulls if f"{self.owner}:{p['head']['ref']}" == query["head"]]
            return self._page(path, pulls, query)
        if rest == "/pulls" and method == "POST":
            return self._create_pull(body)
        found = re.fullmatch(r"/pulls/(\d+)", rest)
        if found and method == "GET":
            return 200, self._pull_json(state.issues[int(found.group(1))]), {}
        found = re.fullmatch(r"/pulls/(\d+)/reviews", rest)
        if found and method == "GET":
            return self._page(path, state.reviews.get(int(found.group(1)), []), query)
        found = re.fullmatch(r"/pulls/(\d+)/reviews/(\d+)/comments", rest)
        if found and method == "GET":
            return self._page(path, state.review_comments[int(found.group(2))], query)
        found = re.fullmatch(r"/commits/([^/]+)/check-runs", rest)
        if found and method == "GET":
            runs = state.check_runs.get(found.group(1), [])
            status, page, extra = self._page(path, runs, query)
            return status, {"total_count": len(runs), "check_runs": page}, extra
        found = re.fullmatch(r"/collaborators/([^/]+)/permission", rest)
        if found and method == "GET":
            level = state.permissions.get(found.group(1), "read")
            return 200, {"permission": level, "role_name": level, "user": {"login": found.group(1)}}, {}
        raise KeyError(path)

    def _issues(self, query: dict[str, str]) -> list[dict[str, Any]]:
        wanted = {name for name in query.get("labels", "").split(",") if name}
        state = query.get("state", "open")
        since = query.get("since")
        found = []
        for number in sorted(self.state.issues, reverse=True):  # newest first, as GitHub lists them
            issue = self.state.issues[number]
            names = {label["name"] for label in issue["labels"]}
            if wanted - names or (state != "all" and issue["state"] != state):
                continue
            if since and issue["updated_at"] < since:
                continue
            shown = {k: v for k, v in issue.items() if k not in ("head", "base", "merged", "merged_at", "draft")}
            if "head" in issue:
                shown["pull_request"] = {"url": f"{self.url}/repos/{self.full_name}/pulls/{number}"}
            found.append(shown)
        return found

    def _new_comment(self, number: int, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            raise KeyError("body")
        comment_id = self.comment(number, body["body"], user=self.login)
        return next(c for c in self.state.comments[number] if c["id"] == comment_id)

    def _create_pull(self, body: Any, user: str | None = None) -> tuple[int, Any, dict[str, str]]:
        head, base = body.get("head"), body.get("base")
        if self._head(head) is None:
            return 422, _invalid("PullRequest", "head", "invalid"), {}
        if any(p.get("head", {}).get("ref") == head and p["state"] == "open" for p in self.state.issues.values()):
            message = f"A pull request already exists for {self.owner}:{head}."
            return 422, {**_invalid("PullRequest", "head", "custom"), "errors": [{"message": message}]}, {}
        number = self.issue(
            body.get("title", ""), body.get("body", ""), labels=("mc",) if user else (), user=user or self.login
        )
        pull = self.state.issues[number]
        pull.update(
            head={"ref": head, "label": f"{self.owner}:{head}"},
            base={"ref": base},
            draft=bool(body.get("draft")),
            merged=False,
            merged_at=None,
            html_url=f"https://github.example/{self.full_name}/pull/{number}",
        )
        return 201, self._pull_json(pull), {}

    def _pull_json(self, pull: dict[str, Any]) -> dict[str, Any]:
        head = self._head(pull["head"]["ref"])
        return {
            "id": pull["id"],
            "number": pull["number"],
            "title": pull["title"],
            "body": pull["body"],
            "state": pull["state"],
            "draft": pull["draft"],
            "merged": pull["merged"],
            "merged_at": pull["merged_at"],
            "html_url": pull["html_url"],
            "head": {**pull["head"], "sha": head},
            "base": pull["base"],
            "user": pull["user"],
        }

    def _head(self, branch: str | None) -> str | None:
        if not branch:
            return None
        found = _git(self.remote, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
        return found or None

    def _page(self, path: str, items: list[Any], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        page = max(1, int(query.get("page", 1)))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []
        if page < last:
            links.append(f'<{self._link(path, query, page + 1)}>; rel="next"')
            links.append(f'<{self._link(path, query, last)}>; rel="last"')
        return 200, chunk, ({"link": ", ".join(links)} if links else {})

    def _link(self, path: str, query: dict[str, str], page: int) -> str:
        return f"{self.url}{path}?{urlencode({**query, 'page': page})}"

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, payload: Any, extra: dict[str, str], recorded: Recorded
    ) -> None:
        """Answer, having recorded the status first (the client may read the record as soon as it has the answer)."""
        data = json.dumps(payload).encode() if payload is not None else b""
        etag = f'W/"{hashlib.sha256(data).hexdigest()[:32]}"'
        if status == 200 and handler.command == "GET" and recorded.headers.get("if-none-match") == etag:
            status, data = 304, b""
            with self.lock:
                self.remaining += 1  # a 304 does not count against the rate limit
        recorded.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("x-github-api-version-selected", "2022-11-28")
        handler.send_header("x-ratelimit-limit", str(self.rate_limit))
        handler.send_header("x-ratelimit-used", str(self.rate_limit - self.remaining))
        handler.send_header("x-ratelimit-resource", "core")
        if "x-ratelimit-remaining" not in extra:
            handler.send_header("x-ratelimit-remaining", str(self.remaining))
            handler.send_header("x-ratelimit-reset", str(int(time.time()) + 3600))
        if handler.command == "GET" and status in (200, 304):
            handler.send_header("ETag", etag)
            handler.send_header(
                "Cache-Control", f"private, max-age={self.cache_seconds}, s-maxage={self.cache_seconds}"
            )
            handler.send_header("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


_REASONS = {
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    422: "Validation Failed",
    500: "Server Error",
    502: "Bad Gateway",
}


def _invalid(resource: str, field_name: str, code: str) -> dict[str, Any]:
    return {
        "message": "Validation Failed",
        "errors": [{"resource": resource, "field": field_name, "code": code}],
        "documentation_url": DOCS,
    }


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
