"""Incremental Slack and GitHub ingestion, costed in API calls: a loopback Slack workspace of 10,000 threads (one
channel, a thread every 20 minutes, most with replies, some answered by askflow itself) and a loopback GitHub
repository of 5,000 issues (most closed, many with comments), indexed into the embedded PostgreSQL with stub
embeddings (it measures API calls, not models). For each source: the first run, an unchanged rerun, a rerun with 1%
of it changed (Slack: new threads and new replies to recent threads; GitHub: new and updated issues), and the
reconcile, unchanged and after changes only it can see (replies to and deletions of threads older than the reply
window; deleted issues). Each run's API calls per method, calls made per thread or issue, documents written and
pruned, and seconds.

Targets: an unchanged rerun costs at most one history page per 200 threads and no call per thread; a 1% change adds
about 1% of the first run's per-thread calls. The seconds leave PyGithub's pacing out (``bootstrap`` spaces GitHub
calls 0.25 s apart: ``paced_floor_s`` is what it adds at least). Progress on stderr; one JSON object as the last
line."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import time
from decimal import Decimal

from _stack import temp_data_dir

THREADS, ISSUES = 10_000, 5_000
BASE_TS, THREAD_EVERY_S = 1_700_000_000, 1_200
HISTORY_PAGE = 200
GITHUB_PACING_S = 0.25  # bootstrap's seconds_between_requests
SLACK_PER_THREAD = ("conversations.replies", "chat.getPermalink")
GITHUB_PER_ISSUE = ("GET /repos/{repo}/issues/{number}", "GET /repos/{repo}/issues/{number}/comments")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ts(seconds: float) -> str:
    return f"{Decimal(seconds):.6f}"


def slack_channel(count: int) -> list[dict]:
    """Threads oldest first: three in five have one to four replies, one in ten of those askflow's answer too."""
    messages = []
    for n in range(count):
        at = BASE_TS + n * THREAD_EVERY_S
        message = {"ts": ts(at), "user": f"U{n % 97}", "text": f"Question {n}: how do I tune pool {n % 13}?"}
        if n % 5 < 3:
            message["replies"] = [{"ts": ts(at + 60 * (r + 1)), "user": f"U{(n + r) % 89}",
                                   "text": f"Reply {r} to {n}: set slots to {r + n % 7}"} for r in range(1 + n % 4)]
            if n % 10 == 0:
                message["replies"].append({"ts": ts(at + 600), "user": "UBOT", "bot_id": "BBOT",
                                           "text": f"askflow: see the pools page [1] ({n})"})
        messages.append(message)
    return messages


def github_issues(count: int) -> list[dict]:
    """Issues updated in order of their number over two years: three in five closed, two in five with comments."""
    start = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
    issues = []
    for n in range(1, count + 1):
        updated = (start + dt.timedelta(hours=3 * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        issue = {"number": n, "title": f"Scheduler bug {n}", "body": f"Traceback {n} in the scheduler loop",
                 "labels": ["bug"] if n % 2 else ["question"], "updated_at": updated,
                 "comments": [f"Seen on {n % 9}.x", "Same here"][: 1 + n % 2] if n % 5 < 2 else []}
        if n % 5 < 3:
            issue |= {"state": "closed", "closed_at": updated,
                      "state_reason": "not_planned" if n % 17 == 0 else "completed"}
        issues.append(issue)
    return issues


def change_slack(channel: list[dict], share: float) -> int:
    """New threads and new replies to recent threads (within the reply window), ``share`` of the threads in all."""
    changed = round(len(channel) * share)
    newest = Decimal(channel[-1]["ts"])
    recent = [m for m in channel[-400:] if m.get("replies")]  # the last 400 threads: within a week
    for k, thread in enumerate(recent[: changed // 2]):  # new replies to recent threads
        thread["replies"].append({"ts": ts(newest + 7 + k), "user": "U5", "text": f"Late reply {k}"})
    for k in range(changed - changed // 2):  # new threads, one in two with a reply
        at = newest + 3_600 + k * 60
        thread = {"ts": ts(at), "user": "U7", "text": f"New question {k}"}
        if k % 2 == 0:
            thread["replies"] = [{"ts": ts(at + 30), "user": "U8", "text": f"New answer {k}"}]
        channel.append(thread)
    return changed


def change_slack_history(channel: list[dict], replies: int, deletions: int) -> None:
    """What only the reconcile sees: replies to threads older than the reply window, and old threads deleted."""
    newest = Decimal(channel[-1]["ts"])
    old = [m for m in channel[: len(channel) // 2] if m.get("replies")]
    for k, thread in enumerate(old[:replies]):
        thread["replies"].append({"ts": ts(newest + 11 + k), "user": "U9", "text": f"Answer, months later {k}"})
    gone = {m["ts"] for m in channel[len(channel) // 2: len(channel) // 2 + deletions]}
    channel[:] = [m for m in channel if m["ts"] not in gone]


def change_github(issues: list[dict], share: float) -> int:
    changed = round(len(issues) * share)
    now = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    stamp = lambda k: (now + dt.timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    for k, issue in enumerate(issues[: changed // 2 * 40: 40]):  # older issues commented on, some closed
        issue |= {"updated_at": stamp(k), "comments": [*issue.get("comments", []), f"Still seen in 2.{k}"]}
        if k % 3 == 0:
            issue |= {"state": "closed", "closed_at": stamp(k), "state_reason": "completed"}
    for k in range(changed - changed // 2):
        number = len(issues) + 1
        issues.append({"number": number, "title": f"New bug {k}", "body": f"New traceback {k}",
                       "updated_at": stamp(1_000 + k), "labels": ["bug"]})
    return changed


def measure(api, per_unit: tuple[str, ...], run) -> dict:
    api.calls.clear()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    counts = dict(sorted(api.counts().items()))
    return {"calls": counts, "calls_total": sum(counts.values()),
            "per_thread_calls": sum(counts.get(name, 0) for name in per_unit),
            "documents_written": result["documents_written"], "documents_pruned": result["documents_pruned"],
            "full_sync": result["full_sync"], "seconds": round(seconds, 2)}


def main() -> dict:
    os.environ["ASKFLOW_DATA_DIR"] = str(temp_data_dir())
    from github import Github

    from askflow.bootstrap import bootstrap
    from askflow.config import Settings
    from askflow.ingest.pipeline import index_github_repo, index_slack_channel
    from tests.fakes import HashEmbeddings
    from tests.support.loopback_apis import GitHubAPI, SlackAPI

    slack, github = SlackAPI(), GitHubAPI()
    slack.channels["C1"] = slack_channel(THREADS)
    github.issues["acme/pipes"] = github_issues(ISSUES)
    settings = Settings(project_id="askflow-bench", collection="bench_incremental", slack_bot_token="xoxb-bench",
                        slack_api_url=slack.base_url, github_api_url=github.url, github_token="ghp_bench")
    components = bootstrap(settings)
    embeddings, strategy, store = HashEmbeddings(), components.strategy(), components.store
    unpaced = Github(**(components.github_client.requester.kwargs | {"seconds_between_requests": None}))
    window_s = settings.slack_reply_window_days * 86_400

    def channel(full_sync: bool = False):
        return lambda: index_slack_channel("C1", client=components.slack_client, store=store, embeddings=embeddings,
                                           strategy=strategy, answers_source=settings.answers_source,
                                           reply_window_s=window_s, full_sync=full_sync,
                                           audiences=["slack:workspace"])

    def repo(full_sync: bool = False):
        return lambda: index_github_repo("acme/pipes", client=unpaced, store=store, embeddings=embeddings,
                                         strategy=strategy, answers_source=settings.answers_source,
                                         full_sync=full_sync, audiences=["public"])

    runs: dict[str, dict] = {"slack": {}, "github": {}}

    def record(source: str, name: str, figures: dict) -> None:
        if source == "github":
            figures["paced_floor_s"] = round(figures["calls_total"] * GITHUB_PACING_S, 2)
        runs[source][name] = figures
        progress(f"{source} {name}: {figures['calls_total']} calls ({figures['per_thread_calls']} per thread/issue), "
                 f"{figures['documents_written']} written, {figures['documents_pruned']} pruned, "
                 f"{figures['seconds']} s")

    try:
        record("slack", "first_run", measure(slack, SLACK_PER_THREAD, channel()))
        record("slack", "unchanged_rerun", measure(slack, SLACK_PER_THREAD, channel()))
        slack_changed = change_slack(slack.channels["C1"], 0.01)
        record("slack", "rerun_1pct_changed", measure(slack, SLACK_PER_THREAD, channel()))
        record("slack", "reconcile_unchanged", measure(slack, SLACK_PER_THREAD, channel(full_sync=True)))
        change_slack_history(slack.channels["C1"], replies=50, deletions=50)
        record("slack", "rerun_after_old_changes", measure(slack, SLACK_PER_THREAD, channel()))
        record("slack", "reconcile_after_old_changes", measure(slack, SLACK_PER_THREAD, channel(full_sync=True)))

        record("github", "first_run", measure(github, GITHUB_PER_ISSUE, repo()))
        record("github", "unchanged_rerun", measure(github, GITHUB_PER_ISSUE, repo()))
        github_changed = change_github(github.issues["acme/pipes"], 0.01)
        record("github", "rerun_1pct_changed", measure(github, GITHUB_PER_ISSUE, repo()))
        record("github", "reconcile_unchanged", measure(github, GITHUB_PER_ISSUE, repo(full_sync=True)))
        del github.issues["acme/pipes"][100:125]
        record("github", "reconcile_after_25_deleted", measure(github, GITHUB_PER_ISSUE, repo(full_sync=True)))
    finally:
        components.close()
        slack.stop()
        github.stop()

    slack_runs, github_runs = runs["slack"], runs["github"]
    pages_allowed = math.ceil(THREADS / HISTORY_PAGE)
    unchanged_pages = slack_runs["unchanged_rerun"]["calls"].get("conversations.history", 0)
    return {
        "threads": THREADS, "issues": ISSUES, "reply_window_days": settings.slack_reply_window_days,
        "slack": slack_runs, "github": github_runs,
        "targets": {
            "slack_unchanged_history_pages": unchanged_pages, "slack_history_pages_allowed": pages_allowed,
            "slack_unchanged_per_thread_calls": slack_runs["unchanged_rerun"]["per_thread_calls"],
            "github_unchanged_per_issue_calls": github_runs["unchanged_rerun"]["per_thread_calls"],
            "slack_changed_threads": slack_changed, "github_changed_issues": github_changed,
            "slack_1pct_per_thread_share_of_first": round(
                slack_runs["rerun_1pct_changed"]["per_thread_calls"] / slack_runs["first_run"]["per_thread_calls"], 4),
            "github_1pct_per_issue_share_of_first": round(
                github_runs["rerun_1pct_changed"]["per_thread_calls"] / github_runs["first_run"]["per_thread_calls"],
                4),
            "met": unchanged_pages <= pages_allowed
            and slack_runs["unchanged_rerun"]["per_thread_calls"] == 0
            and github_runs["unchanged_rerun"]["per_thread_calls"] == 0,
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
