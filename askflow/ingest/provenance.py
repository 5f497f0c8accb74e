"""Provenance: every chunk ingestion writes says where it came from (``Provenance``): its document's location, the
document's version there, when it was ingested and by which run.

A run is named once and handed to every step it runs: an Airflow task's ``airflow_run`` (the DAG, the run, the task
and its map index), a CLI invocation's ``cli_run`` (made once per process). A document's version is what its
location says of it: a git commit, a website's ``ETag``/``Last-Modified`` (or its sitemap ``lastmod``), a GCS
object's generation, a Slack thread's ``latest_reply``, a GitHub issue's ``updated_at``, a local file's mtime and
content hash; whatever says nothing gets its content's fingerprint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from askflow.domain.clock import utcnow
from askflow.domain.model import Chunk, Document, Provenance


@functools.cache
def cli_run() -> str:
    """This process's run id ("cli:<UTC time>-<random>"): one per CLI invocation, the same for all it writes."""
    return _run_id("cli")


@functools.cache
def process_run() -> str:
    """The run id of whatever writes without naming its run (the evaluation loop's write-back, the demo):
    "process:<UTC time>-<random>", one per process."""
    return _run_id("process")


def _run_id(kind: str) -> str:
    return f"{kind}:{utcnow():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def airflow_run(context: Mapping[str, Any]) -> str:
    """The run id of the Airflow task whose ``context`` (``get_current_context()``) this is:
    "airflow:<dag_id>/<run_id>/<task_id>[<map_index>]" (no map index for a task that is not mapped)."""
    dag_run, ti = context.get("dag_run"), context.get("ti")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or "?"
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or "?"
    task_id = getattr(ti, "task_id", None) or "?"
    map_index = getattr(ti, "map_index", -1)
    mapped = f"[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else ""
    return f"airflow:{dag_id}/{run_id}/{task_id}{mapped}"


def document_version(document: Document) -> str:
    """The document's version at its location: the one the location set, else what its metadata says (a Slack
    thread's ``latest_reply``, a GitHub issue's ``updated_at``), else its content's fingerprint."""
    if document.version:
        return document.version
    for key in ("latest_reply", "updated_at"):
        if document.metadata.get(key):
            return f"{key} {document.metadata[key]}"
    return f"sha256 {document.sha[:16]}"


def stamped(chunks: Sequence[Chunk], document: Document, *, run: str, at: dt.datetime,
            location: str | None = None) -> list[Chunk]:
    """``chunks`` of ``document`` with its provenance: its location (the document's own, else ``location``, else its
    URL), its version, ``at`` and ``run``."""
    provenance = Provenance(location=document.location or location or document.url,
                            version=document_version(document), ingested_at=at, run=run)
    return [dataclasses.replace(chunk, provenance=provenance) for chunk in chunks]
