"""Slack ingestion against the loopback Slack API: what askflow's own app posted never comes back as a source, from
whichever of its installations it came; a thread whose root was deleted is pruned, and an edited reply, which moves
nothing Slack's history shows, is read by the turns of re-reads."""

from __future__ import annotations

from askflow.ingest.sources.slack import rereads
from tests.support.loopback_apis import SlackAPI
from tests.test_sources import Index, calls_to, slack  # noqa: F401 (slack: the channel fixture)

ROOT = "slack:C1/1700000000.000100"


def _content(index: Index, doc_id: str) -> str:
    return " ".join(chunk.content for chunk in index.chunks(doc_id))


def test_what_askflows_app_posted_from_another_installation_is_not_indexed(slack: SlackAPI):  # noqa: F811
    """The other side of a Slack Connect channel runs askflow too: its answers come from another bot user and bot
    id, but from askflow's app (``app_id``, as in ``bot_profile``). Another app's message is indexed like any."""
    slack.channels["C1"][0]["replies"] += [
        {"ts": "1700000003.000100", "text": "askflow (their side): set retries [1]", "user": "UTHEIRS",
         "bot_id": "BTHEIRS", "app_id": SlackAPI.APP_ID},
        {"ts": "1700000004.000100", "text": "Deploy bot: release 2.9 is out", "user": "UDEPLOY", "bot_id": "BDEPLOY",
         "app_id": "ADEPLOY"}]
    slack.channels["C1"].append({"ts": "1700000300.000100", "text": "askflow (their side): a notice",
                                 "user": "UTHEIRS", "bot_id": "BTHEIRS", "app_id": SlackAPI.APP_ID})
    index = Index()
    index.channel(slack)
    assert set(index.stored("slack:")) == {ROOT, "slack:C1/1700000100.000100"}
    thread = _content(index, ROOT)
    assert "askflow (their side)" not in thread and "release 2.9 is out" in thread
    assert len(calls_to(slack, "bots.info")) == 1  # askflow's app id, asked once for the whole run


def test_a_configured_app_id_is_not_asked_of_slack(slack: SlackAPI):  # noqa: F811
    slack.channels["C1"][0]["replies"].append(
        {"ts": "1700000003.000100", "text": "askflow (their side): set retries [1]", "user": "UTHEIRS",
         "bot_id": "BTHEIRS", "app_id": "AOURS"})
    index = Index()
    index.channel(slack, app_id="AOURS")
    assert "askflow (their side)" not in _content(index, ROOT)
    assert not calls_to(slack, "bots.info")


def test_a_thread_whose_root_was_deleted_is_pruned_at_the_next_incremental_run(slack: SlackAPI):  # noqa: F811
    """Slack keeps a deleted root that has replies as a tombstone ("This message was deleted."), its replies and
    sync point as they were: the thread's question is gone, and so is the thread."""
    index = Index()
    index.channel(slack)
    slack.channels["C1"][0]["deleted"] = True
    slack.channels["C1"][1]["deleted"] = True  # no replies: gone from history altogether
    slack.calls.clear()
    rerun = index.channel(slack)
    assert rerun["full_sync"] is False and rerun["documents_pruned"] == 2
    assert index.stored("slack:") == {}
    assert not calls_to(slack, "conversations.replies")  # no call to find out


def test_an_edited_reply_is_read_within_reread_every_runs_unedited_ones_never_written(slack: SlackAPI):  # noqa: F811
    """An edited reply moves nothing history shows (the loopback API, like Slack, moves no root field): each run
    reads again the replies of its share of the listed threads, so some run of every ``reread_every`` consecutive
    ones reads the edit."""
    index = Index()
    index.channel(slack)
    embedded = len(index.embeddings.embedded)
    slack.calls.clear()
    quiet = [index.channel(slack, reread_every=4, reread_turns=(turn,)) for turn in range(4)]
    assert [run["reread"] for run in quiet].count(1) == 1 and sum(run["reread"] for run in quiet) == 1
    assert len(calls_to(slack, "conversations.replies")) == 1  # one thread with replies: read once in four runs
    assert all(run["documents_written"] == 0 for run in quiet) and len(index.embeddings.embedded) == embedded

    reply = slack.channels["C1"][0]["replies"][0]
    reply.update(text="Set retries, retry_delay and retry_exponential_backoff on the sensor.",
                 edited="1700000500.000100")
    runs = [index.channel(slack, reread_every=4, reread_turns=(turn,)) for turn in range(4, 8)]
    assert sum(run["documents_written"] for run in runs) == 1
    assert "retry_exponential_backoff" in _content(index, ROOT)
    assert index.stored("slack:").keys() == {ROOT, "slack:C1/1700000100.000100"}


def test_each_listed_thread_is_read_again_once_in_every_turns_and_a_reconcile_takes_two():
    threads = [f"slack:C1/17000{n:05d}.000100" for n in range(200)]
    for start in (0, 13, 1000):
        turns = range(start, start + 24)
        assert all(sum(rereads(doc_id, turns=(turn,), every=24) for turn in turns) == 1 for doc_id in threads)
    share = sum(rereads(doc_id, turns=(5,), every=24) for doc_id in threads)
    assert 0 < share < 30  # about 200 / 24 per run
    assert not any(rereads(doc_id, turns=(5,), every=0) for doc_id in threads)
    both = {d for d in threads if rereads(d, turns=(48, 2), every=24)}  # a reconcile: its hour's share and its own
    assert both == {d for d in threads if rereads(d, turns=(48,), every=24) or rereads(d, turns=(2,), every=24)}
