"""The MCP server: askflow's docs for coding agents, over the Model Context Protocol's streamable HTTP transport.

Built with the official ``mcp`` SDK, stateless and with JSON responses, so any instance answers any call (a Cloud
Function scales to zero and back). Tools: ``search`` (the production hybrid retrieval, results in the shape OpenAI's
deep-research connectors expect), ``fetch`` (a whole document) and ``ask`` (a cited answer through the same request
path as the web page: queued, answered by the worker). With a key configured (``ASKFLOW_API_KEY``,
``ASKFLOW_API_KEYS``), every call needs one, as ``X-API-Key`` or ``Authorization: Bearer``; otherwise 401. Each tool
sees what its key may see (its audiences; without keys, ``public``): search and fetch filter by them, and an answer
is shown to its asker alone: a key asks with an asker token derived from the key (``key_asker_token``), so whoever
holds the key, and no one else, reads its answers again (``answer``, for one still being written). The server is
one asker of the budgets: ``search`` and ``fetch`` count as lookups (``ASKFLOW_BUDGET_LOOKUPS_PER_ASKER``), ``ask``
as a question.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from typing import Any

from mcp.server.mcpserver import Context  # the tools' context parameter: the SDK finds it by its annotation

from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.entrypoints.credentials import keyed, keys_configured
from askflow.service_layer import lookup  # the tools' result types: the SDK reads their annotations

log = logging.getLogger(__name__)
PATH = "/mcp"


def build_server(components):
    """The MCP server and its tools; each tool's blocking work runs on a worker thread."""
    from anyio import to_thread
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    from askflow.domain.errors import AskflowError

    server = MCPServer(
        name="askflow", version="0.1.0",
        instructions="Search and read this team's documentation, Slack threads and GitHub issues, or ask a question "
                     "and get an answer that cites its sources. Cite the URLs you use.")
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    async def run(work, *args, **kwargs):
        try:
            return await to_thread.run_sync(lambda: work(*args, **kwargs))
        except AskflowError as error:  # a failure the agent reads (its own mistake, a missing id), no traceback
            raise ToolError(str(error)) from None

    @server.tool(annotations=read_only)
    async def search(query: str, ctx: Context) -> lookup.Hits:
        """Search the documentation: the best-matching documents, each with its id (for fetch), title, URL and the
        passage that matched."""
        retriever, _ = components.docs_for_agents()
        return await run(lookup.search_documents, query, retriever=retriever,
                         limit=components.settings.mcp_search_results, budgets=components.budgets,
                         prices=components.prices, viewer=tool_viewer(ctx, components.settings),
                         base_url=components.settings.public_url)

    @server.tool(annotations=read_only)
    async def fetch(id: str, ctx: Context) -> lookup.WholeDocument:  # noqa: A002 - deep-research connectors' name
        """Read one whole document by the id search gave, with its URL."""
        _, store = components.docs_for_agents()
        return await run(lookup.read_document, id[:2000], store=store, budgets=components.budgets,
                         viewer=tool_viewer(ctx, components.settings))

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=False, openWorldHint=False))
    async def ask(question: str, ctx: Context) -> lookup.CitedAnswer:
        """Ask a question: an answer written from the documentation, with numbered citations [n] of its sources.
        If it takes longer than the server waits, the result has the request id and its status so far."""
        from askflow.service_layer.commands import AskQuestion

        try:
            command = AskQuestion(question=question)
        except ValueError as error:  # pydantic's message, one line per problem
            raise ToolError("; ".join(f"question: {e['msg']}" for e in error.errors())) from None
        viewer, token = tool_asker(ctx, components.settings)
        return await run(lookup.ask_and_wait, command.question, requests=components.requests,
                         events=components.events, settings=components.settings, budgets=components.budgets,
                         timeout_s=components.settings.mcp_ask_timeout_s, viewer=viewer, asker_token=token)

    @server.tool(annotations=read_only)
    async def answer(request_id: str, ctx: Context) -> lookup.CitedAnswer:
        """Read an answer ask gave before, by its request id: one still being written, when ask returned before it
        was done. Only the key that asked it reads an answer that is not public."""
        viewer, token = tool_asker(ctx, components.settings)
        return await run(lookup.read_answer, request_id[:200], requests=components.requests,
                         settings=components.settings, viewer=viewer, asker_token=token)

    return server


def _sent_key(headers) -> str:
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def tool_viewer(ctx: Context, settings) -> Viewer:
    """Whom a tool call's results are for: its key's audiences (no keys configured: ``public``)."""
    return tool_asker(ctx, settings)[0]


def tool_asker(ctx: Context, settings) -> tuple[Viewer, str | None]:
    """Whom a tool call's results are for, and the asker token its questions are bound to: its key's audiences and
    the key's own asker token (no keys configured: ``public``, and a new token per question)."""
    request = ctx.request_context.request
    sent = _sent_key(request.headers) if request is not None else ""
    found = keyed(sent, settings) if sent and keys_configured(settings) else None
    if found is None:
        return PUBLIC_VIEWER, None
    return found.viewer, key_asker_token(sent)


def key_asker_token(key: str) -> str:
    """The asker token of the questions a key asks: a one-way digest of the key (URL-safe, 43 characters), so the
    requests store holds nothing that recovers the key, and every call with the key may read what it asked."""
    digest = hashlib.sha256(b"askflow mcp asker\0" + key.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class McpEndpoint:
    """The MCP server as an ASGI app behind the API key. The SDK's session manager needs a running task group
    (a Starlette lifespan would start it; a function has none), so the first call starts it, once per event loop."""

    def __init__(self, components) -> None:
        from mcp.server.transport_security import TransportSecuritySettings

        settings = components.settings
        self._settings = settings
        hosts = settings.mcp_allowed_hosts
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection="*" not in hosts, allowed_hosts=hosts,
            allowed_origins=[f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")])
        self._server = build_server(components)
        self._app = self._server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, json_response=True, transport_security=security)
        self._running: asyncio.Future | None = None

    async def _started(self) -> None:
        if self._running is None:
            self._running = asyncio.get_running_loop().create_future()
            ready = asyncio.Event()

            async def keep_running() -> None:
                async with self._server.session_manager.run():
                    ready.set()
                    await self._running

            self._task = asyncio.get_running_loop().create_task(keep_running())
            await ready.wait()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not keys_configured(self._settings):
            return True
        decoded = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers.items()}
        return keyed(_sent_key(decoded), self._settings) is not None

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return
        if not self._authorized(dict(scope.get("headers", []))):
            body = json.dumps({"error": "send the API key as X-API-Key or Authorization: Bearer"}).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._started()
        # whatever path the function was called on, the MCP endpoint answers it
        await self._app(dict(scope, path=PATH, raw_path=PATH.encode()), receive, send)


class Delegated:
    """A response that hands the request over to an ASGI app (what functions-framework's async HTTP functions
    return: it calls the response with the request's own scope and channels)."""

    def __init__(self, app) -> None:
        self._app = app

    async def __call__(self, scope, receive, send) -> None:
        await self._app(scope, receive, send)
