"""Loopback servers for the Slack Web API and the GitHub REST API, serving real-format payloads, paged as the real
ones page (Slack by cursor, GitHub by ``page`` and a ``Link`` header) and filtered as they filter (Slack's
``oldest``/``latest``, GitHub's ``since``/``state``/``labels``/``sort``).

Both record every call (``counts()``: calls per API method) and take injected failures:
``fail(path_fragment, status, headers)`` makes the next request whose path contains the fragment answer with that
status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer


class LoopbackAPI(LoopbackServer):
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.failures: list[tuple[str, int, dict[str, str]]] = []
        super().__init__()

    def fail(self, fragment: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        with self._lock:
            self.failures.extend([(fragment, status, headers or {})] * times)

    def _take_failure(self, path: str):
        with self._lock:
            for i, (fragment, status, headers) in enumerate(self.failures):
                if fragment in path:
                    del self.failures[i]
                    return status, headers
        return None

    def counts(self) -> Counter[str]:
        """How many calls each API method got (``call_name``), failed ones included."""
        with self._lock:
            return Counter(self.call_name(call) for call in self.calls)

    def call_name(self, call: dict) -> str:
        raise NotImplementedError

    def respond(self, method: str, path: str, query: dict, body: dict) -> tuple:
        """``(status, payload)`` or ``(status, payload, headers)``."""
        raise NotImplementedError

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str):
                parsed = urllib.parse.urlparse(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
                with api._lock:
                    api.calls.append({"method": method, "path": parsed.path, "query": query, "body": body,
                                      "headers": dict(self.headers)})
                failure = api._take_failure(parsed.path)
                if failure:
                    status, headers = failure
                    payload = {"ok": False, "error": "injected", "message": "injected"}
                else:
                    status, payload, headers = (*api.respond(method, parsed.path, query, body), {})[:3]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PATCH(self):
                self._serve("PATCH")

        return Handler


class SlackAPI(LoopbackAPI):
    """``channels`` maps a channel id to its top-level messages, oldest first: ``{"ts", "user", "text",
    "replies": [...], "subtype", "bot_id", "app_id", "edited"}`` (a reply: ``{"ts", "user", "text", "bot_id",
    "app_id", "edited", "reactions"}``, reactions as Slack lists them: ``[{"name", "users", "count"}]``; an app's
    message also carries its ``bot_profile``). A root ``"deleted": True`` is gone from history, or while it has
    replies shown as Slack keeps it: a ``tombstone``. The bot the token belongs to is ``UBOT``/``BBOT`` of the app
    ``AASKFLOW`` (``bots.info``) in a workspace at ``workspace_url``. ``max_page`` caps a page below what ``limit``
    asks (tests make it small to see paging). ``conversations.info`` calls the ``private_channels`` private and every
    other channel public."""

    BOT_USER, BOT_ID, APP_ID = "UBOT", "BBOT", "AASKFLOW"

    def __init__(self) -> None:
        self.channels: dict[str, list[dict]] = {}
        self.posted: list[dict] = []
        self.updated: list[dict] = []  # chat.update calls, in order (each with its ``ts``)
        self.reactions: list[dict] = []
        self.workspace_url = "https://acme.slack.com/"
        self.max_page: int | None = None
        self.private_channels: set[str] = set()  # what conversations.info calls private
        super().__init__()

    def replies(self, thread_ts: str) -> list[dict]:
        """The bot's messages in a thread as they now read: each posted message with its latest edit applied."""
        with self._lock:
            posted, updated = list(self.posted), list(self.updated)
        messages = [dict(message) for message in posted if message.get("thread_ts") == thread_ts]
        for message in messages:
            for edit in updated:
                if edit["ts"] == message["ts"]:
                    message.update(edit)
        return messages

    def edits(self, ts: str) -> list[dict]:
        with self._lock:
            return [edit for edit in self.updated if edit["ts"] == ts]

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/"

    def call_name(self, call: dict) -> str:
        return call["path"].rsplit("/", 1)[-1]

    def _page(self, items: list, params: dict, render) -> dict:
        """One page of ``items`` (each made a payload by ``render``) from the offset the cursor names, as Slack pages
        (``limit``: 100 unless asked)."""
        limit = int(params.get("limit") or 100)
        limit = min(limit, self.max_page) if self.max_page else limit
        start = int(params.get("cursor") or 0)
        cursor = str(start + limit) if start + limit < len(items) else ""
        return {"ok": True, "messages": [render(item) for item in items[start:start + limit]],
                "has_more": bool(cursor), "response_metadata": {"next_cursor": cursor}}

    @staticmethod
    def _message(message: dict, *, default_user: str, thread_ts: str | None = None) -> dict:
        if message.get("deleted"):  # a deleted root its replies keep: Slack's tombstone
            tombstone = {"type": "message", "subtype": "tombstone", "ts": message["ts"], "user": "USLACKBOT",
                         "text": "This message was deleted.", "hidden": True}
            return tombstone | ({"thread_ts": thread_ts} if thread_ts else {})
        payload = {"type": "message", "ts": message["ts"], "user": message.get("user", default_user),
                   "text": message["text"]}
        payload |= {key: message[key] for key in ("subtype", "bot_id", "app_id", "reactions") if message.get(key)}
        if message.get("app_id"):
            payload["bot_profile"] = {"id": message.get("bot_id"), "app_id": message["app_id"], "name": "an app",
                                      "team_id": "T1"}
        if message.get("edited"):
            payload["edited"] = {"user": payload["user"], "ts": message["edited"]}
        return payload | ({"thread_ts": thread_ts} if thread_ts else {})

    def _history(self, params: dict) -> dict:
        oldest = Decimal(params.get("oldest") or 0)
        latest = Decimal(params["latest"]) if params.get("latest") else None
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")

        def within(ts: Decimal) -> bool:  # Slack's oldest and latest bounds, exclusive unless ``inclusive``
            if ts < oldest or (ts == oldest and not inclusive):
                return False
            return latest is None or ts < latest or (ts == latest and inclusive)

        listed = [m for m in self.channels.get(params["channel"], []) if within(Decimal(m["ts"]))
                  and not (m.get("deleted") and not m.get("replies"))]
        listed.sort(key=lambda m: Decimal(m["ts"]), reverse=True)  # newest first, as Slack lists
        return self._page(listed, params, self._history_message)

    def _history_message(self, m: dict) -> dict:
        message = self._message(m, default_user="U1")
        if m.get("replies"):  # a thread's root, as history shows it: its replies counted, not listed
            message |= {"thread_ts": m["ts"], "reply_count": len(m["replies"]),
                        "reply_users": sorted({r.get("user", "U2") for r in m["replies"]}),
                        "latest_reply": max((r["ts"] for r in m["replies"]), key=Decimal)}
        return message

    def _thread(self, params: dict) -> dict:
        """A thread, its root first; ``oldest``/``latest`` (``inclusive``) bound its replies, the root always
        listed first, as Slack lists it."""
        root = next((m for m in self.channels.get(params["channel"], []) if m["ts"] == params["ts"]), None)
        if root is None:
            return {"ok": False, "error": "thread_not_found"}
        oldest = Decimal(params["oldest"]) if params.get("oldest") else None
        latest = Decimal(params["latest"]) if params.get("latest") else None
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")

        def within(ts: Decimal) -> bool:
            if oldest is not None and (ts < oldest or (ts == oldest and not inclusive)):
                return False
            return latest is None or ts < latest or (ts == latest and inclusive)

        replies = [reply for reply in root.get("replies", []) if within(Decimal(reply["ts"]))]
        return self._page([(root, "U1"), *((reply, "U2") for reply in replies)], params,
                          lambda item: self._message(item[0], default_user=item[1], thread_ts=root["ts"]))

    def respond(self, method, path, query, body):
        params = {**query, **body}
        name = path.rsplit("/", 1)[-1]
        if name == "conversations.history":
            return 200, self._history(params)
        if name == "conversations.info":  # a public channel unless ``private_channels`` names it
            private = params["channel"] in self.private_channels
            return 200, {"ok": True, "channel": {"id": params["channel"], "is_private": private, "is_im": False,
                                                 "is_mpim": False}}
        if name == "conversations.replies":
            return 200, self._thread(params)
        if name == "chat.getPermalink":
            ts = params["message_ts"].replace(".", "")
            return 200, {"ok": True, "channel": params["channel"],
                         "permalink": f"{self.workspace_url}archives/{params['channel']}/p{ts}"}
        if name == "chat.postMessage":
            with self._lock:
                ts = f"9{len(self.posted) + 1}.000100"
                self.posted.append(params | {"ts": ts})
            return 200, {"ok": True, "channel": params["channel"], "ts": ts,
                         "message": {"text": params.get("text", "")}}
        if name == "chat.update":
            with self._lock:
                if not any(message["ts"] == params.get("ts") for message in self.posted):
                    return 200, {"ok": False, "error": "message_not_found"}
                self.updated.append(dict(params))
            return 200, {"ok": True, "channel": params["channel"], "ts": params["ts"],
                         "text": params.get("text", "")}
        if name in ("reactions.add", "reactions.remove"):
            self.reactions.append({"method": name, **params})
            return 200, {"ok": True}
        if name == "bots.info":
            known = params.get("bot") == self.BOT_ID
            return 200, ({"ok": True, "bot": {"id": self.BOT_ID, "deleted": False, "name": "askflow",
                                              "updated": 1700000000, "app_id": self.APP_ID,
                                              "user_id": self.BOT_USER}} if known else
                         {"ok": False, "error": "bot_not_found"})
        if name == "auth.test":
            return 200, {"ok": True, "url": self.workspace_url, "team": "Acme", "user": "askflow",
                         "user_id": self.BOT_USER, "bot_id": self.BOT_ID, "team_id": "T1"}
        return 200, {"ok": False, "error": "unknown_method"}


def _github_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class GitHubAPI(LoopbackAPI):
    """``issues`` maps "owner/name" to issue dicts: ``number, title, body, state, state_reason, labels, closed_at,
    updated_at, comments`` (each a body, or ``{"body", "user"}`` with its author's login), ``pull_request`` (truthy
    for pull requests, which GitHub lists among issues), and for a closed issue ``fixed_by``: the number of the
    merged pull request (of the same list) whose merge commit closed it, or ``closed_by_commit``: the sha of a commit
    pushed directly that did. An issue's ``events`` are GitHub's: a
    ``closed`` event (with that commit's ``commit_id`` and ``commit_url``, or none when a person closed it); a
    commit's ``pulls`` list the pull request it merged. Lists are paged as GitHub pages them: ``per_page`` (30 unless
    asked, at most 100) and ``page``, with a ``Link`` header."""

    UPDATED_AT = "2024-01-03T03:04:05Z"  # an issue's ``updated_at`` unless it says

    def __init__(self) -> None:
        self.issues: dict[str, list[dict]] = {}
        super().__init__()

    def call_name(self, call: dict) -> str:
        path = re.sub(r"^/repos/[^/]+/[^/]+", "/repos/{repo}", call["path"])
        path = re.sub(r"/[0-9a-f]{40}(?=/|$)", "/{sha}", path)
        return f"{call['method']} {re.sub(r'/[0-9]+(?=/|$)', '/{number}', path)}"

    def _issue(self, repo: str, issue: dict) -> dict:
        url = f"{self.url}/repos/{repo}/issues/{issue['number']}"
        kind = "pull" if issue.get("pull_request") else "issues"
        state = issue.get("state", "open")
        payload = {
            "id": 1000 + issue["number"], "number": issue["number"], "title": issue["title"],
            "body": issue.get("body", ""), "state": state,
            "state_reason": issue.get("state_reason", "completed") if state == "closed" else None,
            "labels": [{"id": i, "name": name, "color": "ededed"} for i, name in enumerate(issue.get("labels", []))],
            "closed_at": issue.get("closed_at"), "created_at": issue.get("created_at", "2024-01-02T03:04:05Z"),
            "updated_at": issue.get("updated_at", self.UPDATED_AT),
            "html_url": f"https://github.com/{repo}/{kind}/{issue['number']}",
            "url": url, "comments_url": f"{url}/comments", "comments": len(issue.get("comments", [])),
            "user": {"login": "reporter", "id": 7},
        }
        if issue.get("pull_request"):
            payload["pull_request"] = {"url": f"{self.url}/repos/{repo}/pulls/{issue['number']}"}
        return payload

    @staticmethod
    def merge_commit(repo: str, pull: int) -> str:
        """The sha of the commit that merged pull request ``pull``."""
        return hashlib.sha1(f"{repo}#{pull}".encode()).hexdigest()

    def _events(self, repo: str, issue: dict) -> list[dict]:
        """An issue's events as GitHub lists them, oldest first: it was labelled, then (when closed) closed, by the
        merge commit of the pull request that fixed it, a commit pushed directly, or a person."""
        actor = {"login": "maintainer", "id": 9}
        events = [{"id": 1, "event": "labeled", "actor": actor, "commit_id": None, "commit_url": None,
                   "created_at": issue.get("created_at", "2024-01-02T03:04:05Z")}] if issue.get("labels") else []
        if issue.get("state") == "closed":
            sha = (self.merge_commit(repo, issue["fixed_by"]) if issue.get("fixed_by")
                   else issue.get("closed_by_commit"))
            events.append({"id": 2, "event": "closed", "actor": actor, "commit_id": sha,
                           "commit_url": f"{self.url}/repos/{repo}/commits/{sha}" if sha else None,
                           "created_at": issue.get("closed_at"),
                           "state_reason": issue.get("state_reason", "completed")})
        return [event | {"node_id": f"E{event['id']}", "url": f"{self.url}/repos/{repo}/issues/events/{event['id']}"}
                for event in events]

    def _pull(self, repo: str, number: int) -> dict:
        """A merged pull request as ``commits/{sha}/pulls`` lists it."""
        pull = next((i for i in self.issues.get(repo, []) if i["number"] == number), {"title": f"PR {number}"})
        return {"id": 5000 + number, "number": number, "state": "closed", "title": pull["title"],
                "html_url": f"https://github.com/{repo}/pull/{number}",
                "url": f"{self.url}/repos/{repo}/pulls/{number}",
                "merged_at": pull.get("closed_at", "2024-01-03T03:04:05Z"),
                "merge_commit_sha": self.merge_commit(repo, number), "user": {"login": "contributor", "id": 8}}

    def _page(self, path: str, query: dict, items: list, render) -> tuple[int, list, dict]:
        """One page of ``items`` (each made a payload by ``render``), as GitHub pages: ``per_page`` (30 unless asked,
        at most 100) and ``page``, the next page's URL in the ``Link`` header."""
        per_page, page = min(int(query.get("per_page") or 30), 100), int(query.get("page") or 1)
        start = (page - 1) * per_page
        headers = {}
        if start + per_page < len(items):
            headers["Link"] = f'<{self.url}{path}?{urllib.parse.urlencode(query | {"page": page + 1})}>; rel="next"'
        return 200, [render(item) for item in items[start:start + per_page]], headers

    def _listed(self, repo: str, query: dict) -> list[dict]:
        wanted = set(filter(None, query.get("labels", "").split(",")))
        state = query.get("state", "open")
        since = _github_time(query["since"]) if query.get("since") else None
        issues = [issue for issue in self.issues.get(repo, [])
                  if wanted <= set(issue.get("labels", []))
                  and state in ("all", issue.get("state", "open"))
                  and (since is None or _github_time(issue.get("updated_at", self.UPDATED_AT)) >= since)]
        field = "updated_at" if query.get("sort") == "updated" else "created_at"
        default = self.UPDATED_AT if field == "updated_at" else "2024-01-02T03:04:05Z"
        issues.sort(key=lambda issue: (_github_time(issue.get(field, default)), issue["number"]),
                    reverse=query.get("direction", "desc") == "desc")
        return issues

    def respond(self, method, path, query, body):
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "repos":
            repo = f"{parts[1]}/{parts[2]}"
            return 200, {"id": 1, "name": parts[2], "full_name": repo, "url": f"{self.url}/repos/{repo}",
                         "html_url": f"https://github.com/{repo}"}
        if len(parts) == 4 and parts[3] == "issues" and method == "POST":
            repo = f"{parts[1]}/{parts[2]}"
            issues = self.issues.setdefault(repo, [])
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # as GitHub stamps a new issue
            issue = {"number": len(issues) + 1, "title": body["title"], "body": body.get("body", ""),
                     "labels": body.get("labels", []), "created_at": now, "updated_at": now}
            issues.append(issue)
            return 201, self._issue(repo, issue)
        if len(parts) == 4 and parts[3] == "issues":
            repo = f"{parts[1]}/{parts[2]}"
            return self._page(path, query, self._listed(repo, query), lambda issue: self._issue(repo, issue))
        if len(parts) == 5 and parts[3] == "issues":
            repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
            issue = next((i for i in self.issues.get(repo, []) if i["number"] == number), None)
            if issue and method == "PATCH":
                issue.update({key: body[key] for key in ("title", "body", "state") if key in body})
            return (200, self._issue(repo, issue)) if issue else (404, {"message": "Not Found"})
        if len(parts) == 6 and parts[3] == "issues" and parts[5] == "events":
            repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
            issue = next(i for i in self.issues[repo] if i["number"] == number)
            return self._page(path, query, self._events(repo, issue), lambda event: event)
        if len(parts) == 6 and parts[3] == "commits" and parts[5] == "pulls":
            repo, sha = f"{parts[1]}/{parts[2]}", parts[4]
            merged = sorted({i["fixed_by"] for i in self.issues.get(repo, [])
                             if i.get("fixed_by") and self.merge_commit(repo, i["fixed_by"]) == sha})
            return self._page(path, query, merged, lambda number: self._pull(repo, number))
        if len(parts) == 6 and parts[5] == "comments":
            repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
            issue = next(i for i in self.issues[repo] if i["number"] == number)
            return self._page(path, query, list(enumerate(issue.get("comments", []))), lambda item: {
                "id": item[0], "body": item[1]["body"] if isinstance(item[1], dict) else item[1],
                "user": {"login": item[1]["user"] if isinstance(item[1], dict) else f"commenter{item[0]}",
                         "id": item[0]},
                "created_at": "2024-01-02T03:04:05Z", "html_url": f"https://github.com/{repo}/issues/{number}"})
        return 404, {"message": "Not Found"}
