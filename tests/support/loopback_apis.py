"""Loopback servers for the Slack Web API and the GitHub REST API, serving real-format payloads.

Both record every call and take injected failures: ``fail(path_fragment, status, headers)`` makes the next request
whose path contains the fragment answer with that status.
"""

from __future__ import annotations

import json
import urllib.parse
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

    def respond(self, method: str, path: str, query: dict, body: dict) -> tuple[int, object]:
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
                    headers = {}
                    status, payload = api.respond(method, parsed.path, query, body)
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
    """``channels`` maps a channel id to its messages: ``{"ts", "user", "text", "replies": [...]}``."""

    def __init__(self) -> None:
        self.channels: dict[str, list[dict]] = {}
        self.posted: list[dict] = []
        self.updated: list[dict] = []  # chat.update calls, in order (each with its ``ts``)
        self.reactions: list[dict] = []
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

    def respond(self, method, path, query, body):
        params = {**query, **body}
        name = path.rsplit("/", 1)[-1]
        if name == "conversations.history":
            messages = [
                {"type": "message", "ts": m["ts"], "user": m.get("user", "U1"), "text": m["text"],
                 **({"thread_ts": m["ts"], "reply_count": len(m["replies"])} if m.get("replies") else {}),
                 **({"subtype": m["subtype"]} if m.get("subtype") else {})}
                for m in self.channels.get(params["channel"], [])
            ]
            # two pages, as Slack paginates with a cursor
            page = int(params.get("cursor") or 0)
            half = (len(messages) + 1) // 2
            chunk = messages[:half] if page == 0 else messages[half:]
            cursor = "1" if page == 0 and len(messages) > half else ""
            return 200, {"ok": True, "messages": chunk, "has_more": bool(cursor),
                         "response_metadata": {"next_cursor": cursor}}
        if name == "conversations.replies":
            root = next(m for m in self.channels[params["channel"]] if m["ts"] == params["ts"])
            replies = [{"type": "message", "ts": r["ts"], "user": r.get("user", "U2"), "text": r["text"],
                        "thread_ts": root["ts"]} for r in root.get("replies", [])]
            return 200, {"ok": True, "has_more": False, "response_metadata": {"next_cursor": ""},
                         "messages": [{"type": "message", "ts": root["ts"], "user": root.get("user", "U1"),
                                       "text": root["text"], "thread_ts": root["ts"]}, *replies]}
        if name == "chat.getPermalink":
            ts = params["message_ts"].replace(".", "")
            return 200, {"ok": True, "channel": params["channel"],
                         "permalink": f"https://acme.slack.com/archives/{params['channel']}/p{ts}"}
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
        if name == "auth.test":
            return 200, {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1"}
        return 200, {"ok": False, "error": "unknown_method"}


class GitHubAPI(LoopbackAPI):
    """``issues`` maps "owner/name" to issue dicts: ``number, title, body, state, labels, closed_at, comments,
    pull_request`` (truthy for pull requests, which GitHub lists among issues)."""

    def __init__(self) -> None:
        self.issues: dict[str, list[dict]] = {}
        super().__init__()

    def _issue(self, repo: str, issue: dict) -> dict:
        url = f"{self.url}/repos/{repo}/issues/{issue['number']}"
        payload = {
            "id": 1000 + issue["number"], "number": issue["number"], "title": issue["title"],
            "body": issue.get("body", ""), "state": issue.get("state", "open"),
            "labels": [{"id": i, "name": name, "color": "ededed"} for i, name in enumerate(issue.get("labels", []))],
            "closed_at": issue.get("closed_at"), "created_at": "2024-01-02T03:04:05Z",
            "updated_at": "2024-01-03T03:04:05Z", "html_url": f"https://github.com/{repo}/issues/{issue['number']}",
            "url": url, "comments_url": f"{url}/comments", "comments": len(issue.get("comments", [])),
            "user": {"login": "reporter", "id": 7},
        }
        if issue.get("pull_request"):
            payload["pull_request"] = {"url": f"{self.url}/repos/{repo}/pulls/{issue['number']}"}
        return payload

    def respond(self, method, path, query, body):
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "repos":
            repo = f"{parts[1]}/{parts[2]}"
            return 200, {"id": 1, "name": parts[2], "full_name": repo, "url": f"{self.url}/repos/{repo}",
                         "html_url": f"https://github.com/{repo}"}
        if len(parts) == 4 and parts[3] == "issues" and method == "POST":
            repo = f"{parts[1]}/{parts[2]}"
            issues = self.issues.setdefault(repo, [])
            issue = {"number": len(issues) + 1, "title": body["title"], "body": body.get("body", ""),
                     "labels": body.get("labels", [])}
            issues.append(issue)
            return 201, self._issue(repo, issue)
        if len(parts) == 4 and parts[3] == "issues":
            repo = f"{parts[1]}/{parts[2]}"
            wanted = set(filter(None, query.get("labels", "").split(",")))
            return 200, [self._issue(repo, issue) for issue in self.issues.get(repo, [])
                         if wanted <= set(issue.get("labels", []))]
        if len(parts) == 5 and parts[3] == "issues":
            repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
            issue = next((i for i in self.issues.get(repo, []) if i["number"] == number), None)
            if issue and method == "PATCH":
                issue.update({key: body[key] for key in ("title", "body", "state") if key in body})
            return (200, self._issue(repo, issue)) if issue else (404, {"message": "Not Found"})
        if len(parts) == 6 and parts[5] == "comments":
            repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
            issue = next(i for i in self.issues[repo] if i["number"] == number)
            return 200, [{"id": n, "body": text, "user": {"login": f"commenter{n}", "id": n},
                          "created_at": "2024-01-02T03:04:05Z", "html_url": f"https://github.com/{repo}/issues/{number}"}
                         for n, text in enumerate(issue.get("comments", []))]
        return 404, {"message": "Not Found"}
