"""Slack ingestion against the loopback Slack API: what askflow's own app posted never comes back as a source, from
whichever of its installations it came."""

from __future__ import annotations

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
