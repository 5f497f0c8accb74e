"""Looking things up for agents (the MCP server's tools): search the docs, read a whole document, ask and wait for
the cited answer. The same retrieval and the same request path as the web page and Slack. With budgets, each search
and read counts as a lookup of the MCP server (one asker, ``MCP``), each question as its question."""

from __future__ import annotations

import logging
import time
from urllib.parse import urljoin

from pydantic import BaseModel

from askflow.config import Settings
from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.errors import InvalidInput, NotFound
from askflow.domain.model import Chunk, Request, Source, Usage, valid_request_id
from askflow.ports import Budgets, EventBus, RequestStore, VectorStore
from askflow.retrieval.retriever import Retriever
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion

log = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000
MCP = "mcp"  # the MCP server's budget identity


class Hit(BaseModel):
    """A document that matches a search: its id (what ``fetch`` takes), title, URL and best passage."""

    id: str
    title: str
    url: str
    text: str


class Hits(BaseModel):
    results: list[Hit]


class WholeDocument(BaseModel):
    id: str
    title: str
    url: str
    text: str
    metadata: dict[str, str] = {}


class CitedAnswer(BaseModel):
    """An answer with its numbered sources, or (``status`` not ``complete``) where its request stands."""

    request_id: str
    status: str
    answer: str | None = None
    sources: list[Source] = []
    mode: str | None = None
    error: str | None = None
    url: str = ""  # the answer's own page (absolute with ``ASKFLOW_PUBLIC_URL``)
    not_sure: str | None = None  # why askflow is not sure of it: a person was asked (``escalation``)
    escalation: str | None = None  # "open", "joined", "answered" or "skipped": the team's answer, at ``url``
    verified_by: str | None = None  # a cached answer's: who verified the answer it was served from


def search_documents(query: str, *, retriever: Retriever, limit: int, budgets: Budgets | None = None,
                     prices: PriceTable | None = None, viewer: Viewer = PUBLIC_VIEWER, base_url: str = "") -> Hits:
    """The production hybrid retrieval (with what users taught), one hit per document, best first. With
    ``budgets``, a lookup (``OverBudget`` past a limit) whose query embedding's cost is spent (tokens estimated at
    four characters each, as the answer worker does). ``base_url``: what a relative URL (a stored answer's page
    stored before ``ASKFLOW_PUBLIC_URL`` was set) is resolved against, so an agent can open every hit."""
    query = query.strip()
    if not query:
        raise InvalidInput("query: must not be blank")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query: at most {MAX_QUERY_CHARS} characters")
    now = utcnow()
    if budgets is not None:
        budgets.admit([MCP], at=now, kind="lookups")
    found = retriever.search(query, viewer=viewer)
    if budgets is not None and prices is not None:
        embedding = Usage(model=retriever.embedding_model, prompt_tokens=max(1, len(query) // 4))
        try:
            budgets.spend([MCP], prices.cost([embedding]), at=now)
        except Exception as error:  # the search ran: a missed count is logged, never the agent's failure
            log.warning("an MCP search's cost was not counted against its budgets: %s", error)
    documents = retriever.distinct(found.chunks, question_vector=found.vector, viewer=viewer)
    return Hits(results=[Hit(id=d.chunks[0].chunk.doc_id, title=d.chunks[0].chunk.title,
                             url=absolute(d.chunks[0].chunk.url, base_url), text=d.chunks[0].chunk.content)
                         for d in documents[:limit]])


def absolute(url: str, base_url: str) -> str:
    """``url`` resolved against ``base_url`` when it is a path (``/answers/...``); as it is otherwise."""
    return urljoin(base_url.rstrip("/") + "/", url) if base_url and url.startswith("/") else url


def read_document(doc_id: str, *, store: VectorStore, budgets: Budgets | None = None,
                  viewer: Viewer = PUBLIC_VIEWER) -> WholeDocument:
    """A document's stored chunks in order, as one text (overlapping chunks repeat their overlap); with
    ``budgets``, a lookup (``OverBudget`` past a limit)."""
    if budgets is not None:
        budgets.admit([MCP], at=utcnow(), kind="lookups")
    chunks = store.document_chunks(doc_id, audiences=viewer.search_filter)  # one it may not read: "no document"
    if not chunks:
        raise NotFound(f"no document {doc_id}")
    first = chunks[0]
    text = _joined(chunks)
    return WholeDocument(id=doc_id, title=first.title, url=first.url, text=text, metadata={"kind": first.kind.value})


def _joined(chunks: list[Chunk]) -> str:
    """The chunks' text, each section's heading once before its first chunk."""
    parts, section = [], None
    for chunk in chunks:
        if chunk.section and chunk.section != section:
            parts.append(f"## {chunk.section}")
            section = chunk.section
        parts.append(chunk.content)
    return "\n\n".join(parts)


def ask_and_wait(question: str, *, requests: RequestStore, events: EventBus, settings: Settings,
                 timeout_s: float, budgets: Budgets | None = None, poll_s: float = 0.25,
                 viewer: Viewer = PUBLIC_VIEWER, asker_token: str | None = None) -> CitedAnswer:
    """Queue the question like any other (counted against the MCP server's budget, ``MCP``, and the asker's:
    ``asker_token``, a key's), and wait up to ``timeout_s`` for its answer; after that, the request id
    (``read_answer`` follows it)."""
    request, _ = handlers.submit_question(AskQuestion(question=question), requests=requests, events=events,
                                          settings=settings, budgets=budgets, identities=[MCP], viewer=viewer,
                                          asker_token=asker_token)
    deadline = time.monotonic() + timeout_s
    while True:
        request = handlers.get_request(request.request_id, requests=requests, settings=settings)
        if request.terminal or time.monotonic() >= deadline:
            return _cited(request, settings)
        time.sleep(poll_s)


def read_answer(request_id: str, *, requests: RequestStore, settings: Settings, viewer: Viewer = PUBLIC_VIEWER,
                asker_token: str | None = None) -> CitedAnswer:
    """An answer asked before, where it stands: a public one for anyone, another for its asker (``asker_token``)
    and admins only; to anyone else "no request", as for an unknown id."""
    if not valid_request_id(request_id):
        raise NotFound(f"no request {request_id}")
    request = handlers.get_request(request_id, requests=requests, settings=settings)
    if not request.readable_by(viewer, token=asker_token):
        raise NotFound(f"no request {request_id}")
    return _cited(request, settings)


def _cited(request: Request, settings: Settings) -> CitedAnswer:
    return CitedAnswer(request_id=request.request_id, status=request.status.value, answer=request.answer,
                       sources=request.sources if request.terminal else [], mode=request.mode, error=request.error,
                       url=settings.answer_page(request.request_id), verified_by=request.cached_verified_by,
                       not_sure=request.not_sure,
                       escalation=request.escalation.state if request.escalation is not None else None)
