"""The MCP server as coding agents reach it: the `mcp` function under functions-framework (uvicorn), the SDK's own
client over streamable HTTP, the API key required; search and fetch read the indexed docs, ask goes through the
real request path (Pub/Sub push to the answer worker, Firestore)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from google.cloud import firestore

from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture

KEY = "mcp-test-key"
STAFF_KEY, PARTNER_KEY = "mcp-staff-key-0123456789", "mcp-partner-key-0123456789"  # keys bound to audiences


@pytest.fixture(scope="module")
def mcp_url(local_stack, indexed, pg_url) -> str:  # noqa: F811
    settings = _settings(pg_url, "mcp", api_key=KEY, api_keys=[
        {"name": "staff", "key": STAFF_KEY, "audiences": ["employees"]}, {"name": "partner", "key": PARTNER_KEY}])
    local_stack.start_functions(settings)  # the answer worker that answers `ask`
    return local_stack.start_mcp(settings).url.rstrip("/") + "/mcp"


@pytest.fixture(scope="module")
def limited_mcp_url(local_stack, indexed, pg_url) -> str:  # noqa: F811
    """An MCP server allowed two lookups (searches or reads) per day."""
    settings = _settings(pg_url, "mcp", api_key=KEY, budget_lookups_per_asker=2, budgets_collection="budgets_mcp")
    return local_stack.start_mcp(settings).url.rstrip("/") + "/mcp"


def session(url: str, work, *, key: str | None = KEY):
    """Run ``work(client)`` in a session of the SDK's client."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        http = httpx2.AsyncClient(headers={"X-API-Key": key} if key else {}, timeout=90)
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await work(client)

    return asyncio.run(run())


def structured(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


def test_the_tools_are_listed_with_their_inputs(mcp_url):
    async def work(client):
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in session(mcp_url, work)}
    assert set(tools) == {"search", "fetch", "ask", "answer"}
    assert tools["search"].input_schema["required"] == ["query"]
    assert tools["fetch"].input_schema["required"] == ["id"]
    assert tools["search"].annotations.read_only_hint is True and tools["ask"].annotations.read_only_hint is False


def test_search_then_fetch_reads_the_whole_document(mcp_url):
    async def work(client):
        found = structured(await client.call_tool("search", {"query": "How do tasks pull an XCom value?"}))
        document = structured(await client.call_tool("fetch", {"id": found["results"][0]["id"]}))
        missing = await client.call_tool("fetch", {"id": "docs:no-such-page.rst"})
        blank = await client.call_tool("search", {"query": "   "})
        return found, document, missing, blank

    found, document, missing, blank = session(mcp_url, work)
    first = found["results"][0]
    assert first["id"] == "docs:xcoms.rst" and first["url"].endswith("xcoms.rst") and first["text"]
    assert {"id", "title", "url", "text"} <= set(first)
    assert len({hit["id"] for hit in found["results"]}) == len(found["results"])  # one hit per document
    source = (indexed_docs() / "xcoms.rst").read_text()
    assert document["id"] == "docs:xcoms.rst" and document["url"] == first["url"]
    last_words = source.split()[-6:]
    assert first["text"][:40] in document["text"] and " ".join(last_words) in " ".join(document["text"].split())
    assert missing.is_error and "no document docs:no-such-page.rst" in missing.content[0].text
    assert blank.is_error and "must not be blank" in blank.content[0].text


def indexed_docs():
    from tests.test_ask_path import DOCS

    return DOCS


def test_ask_answers_through_the_request_path_with_citations(mcp_url):
    async def work(client):
        answered = structured(await client.call_tool("ask", {"question": "How do tasks pull an XCom value?"}))
        refused = await client.call_tool("ask", {"question": "x" * 5000})
        return answered, refused

    answered, refused = session(mcp_url, work)
    assert answered["status"] == "complete" and answered["mode"] == "extractive"
    assert "[1]" in answered["answer"] and answered["sources"][0]["url"].partition("#")[0].endswith("xcoms.rst")
    stored = firestore.Client(project="askflow-test").collection("requests").document(answered["request_id"]).get()
    assert stored.get("status") == "complete" and stored.get("answer") == answered["answer"]  # a request like any
    assert refused.is_error and "4000" in refused.content[0].text


def test_an_answer_shown_to_its_asker_alone_is_read_again_by_the_key_that_asked_it_only(mcp_url):
    async def ask(client):
        return structured(await client.call_tool("ask", {"question": "How do tasks pull an XCom value?"}))

    asked = session(mcp_url, ask, key=STAFF_KEY)  # a key that sees more than public: the answer is its own
    assert asked["status"] == "complete"
    stored = firestore.Client(project="askflow-test").collection("requests").document(asked["request_id"]).get()
    assert stored.get("asked_in_public") is False and stored.get("asker_sha")  # bound to the key, not to no one

    async def read(client):
        return await client.call_tool("answer", {"request_id": asked["request_id"]})

    again = session(mcp_url, read, key=STAFF_KEY)
    assert structured(again)["answer"] == asked["answer"] and structured(again)["status"] == "complete"
    other = session(mcp_url, read, key=PARTNER_KEY)
    assert other.is_error and f"no request {asked['request_id']}" in other.content[0].text
    assert structured(session(mcp_url, read, key=KEY))["answer"] == asked["answer"]  # the admin key reads it too

    async def unknown(client):
        return (await client.call_tool("answer", {"request_id": "no-such-request"}),
                await client.call_tool("answer", {"request_id": "../__reserved__"}))

    missing, malformed = session(mcp_url, unknown, key=STAFF_KEY)
    assert missing.is_error and "no request no-such-request" in missing.content[0].text
    assert malformed.is_error and "no request" in malformed.content[0].text


def test_without_the_key_every_call_is_401(mcp_url):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(mcp_url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401 and "API key" in json.load(refused.value)["error"]

    async def work(client):
        return (await client.list_tools()).tools

    with pytest.raises(Exception):  # noqa: B017 - the SDK's client fails its handshake on the 401
        session(mcp_url, work, key=None)


def test_searches_and_reads_past_their_limit_are_refused(limited_mcp_url):
    async def work(client):
        found = await client.call_tool("search", {"query": "How do tasks pull an XCom value?"})
        read = await client.call_tool("fetch", {"id": "docs:xcoms.rst"})
        searched_again = await client.call_tool("search", {"query": "Where do connections come from?"})
        read_again = await client.call_tool("fetch", {"id": "docs:xcoms.rst"})
        return found, read, searched_again, read_again

    found, read, searched_again, read_again = session(limited_mcp_url, work)
    assert structured(found)["results"] and structured(read)["id"] == "docs:xcoms.rst"
    assert searched_again.is_error and "limit of 2 lookups per day is reached" in searched_again.content[0].text
    assert read_again.is_error and "limit of 2 lookups per day is reached" in read_again.content[0].text
