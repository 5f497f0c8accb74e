"""Ingest documentation (.md/.mdx/.rst/.html) into the vector store, incrementally, from a folder, a GCS
bucket/prefix or a git repository.

Scheduled daily and runnable ad hoc; params choose the location, the source name and the chunking strategy, so the
same corpus can be re-indexed with another strategy into another collection. The first task pins the location (a
git ref becomes its commit) so every batch reads the same version; batches are mapped tasks that retry on their own
with exponential backoff; only the pinned location, relative paths and what the listing found of them (a website's
pages' ``lastmod`` or crawl results, so a batch on another worker loads by this run's listing) go through XCom.
With ``ASKFLOW_CONTEXTUAL_CHUNKS``, the indexed chunks then get their model-written contexts
(``askflow.ingest.contextual``): ``plan_contexts`` finds the documents whose chunks need one and shares the run's cap
among them, and ``contextualize``, mapped over those, asks the cheap model (a Batch API job each) and indexes the
chunks again; an unchanged chunk costs nothing, and ``prune`` does not wait for them.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS, STRATEGY_PARAMS, components_for, strategy_from
from askflow_lineage import COLLECTION, collection_asset, lineage_task, location_asset, wrote


def _contextualizer(components):
    from askflow.ingest.contextual import Contextualizer

    s = components.settings
    return Contextualizer.configured(s, store=components.store, embeddings=components.embeddings,
                                     model=components.chat_model(s.cheap_model), prices=components.prices,
                                     client=components.openai_client, retrying=components.retrying,
                                     collection=components.serving().collection)


def _location(components, params) -> str:
    return params["docs_location"] or f"gs://{components.settings.documents_bucket}/"


def _lineage(context) -> tuple[list, list]:
    """The location read and the collection written (``askflow_lineage``)."""
    params = context["params"]
    with components_for(params) as components:
        return ([location_asset(components.location(_location(components, params)).public)],
                [collection_asset(components.settings, components.serving().collection)])


@dag(
    dag_id="askflow_ingest_docs",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["askflow", "ingestion"],
    params={
        "docs_location": Param(None, type=["null", "string"], description=(
            "a folder, gs://BUCKET/PREFIX or git+URL[@REF][#subdirectory=DIR]; "
            "default: gs://<settings.documents_bucket>/")),
        "source": Param("docs", type="string", pattern=r"^[a-z0-9_-]+$"),
        "base_url": Param(None, type=["null", "string"], description="URL prefix for source links"),
        **STRATEGY_PARAMS,
        "batch_size": Param(50, type="integer", minimum=1, maximum=1000),
        "prune_all": Param(False, type="boolean", description=(
            "let a location with no documents delete every stored document of the source (fails otherwise)")),
        "audiences": Param(None, type=["null", "array"],
                           items={"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9:._/-]*$"}, description=(
                               "who may read the location's documents (README 'Who may see what'); null: as stored,"
                               " public for a new location")),
    },
)
def askflow_ingest_docs():
    @task
    def list_batches() -> list[dict]:
        from askflow.ingest.pipeline import batches, list_documents

        params = get_current_context()["params"]
        with components_for(params) as components:
            opened = components.location(_location(components, params))
            location, paths, listed = list_documents(opened)
            print(f"{len(paths)} documents at {components.location(location).public}")
        return [{"location": location, "paths": batch, "listed": {p: listed[p] for p in batch if p in listed}}
                for batch in batches(paths, int(params["batch_size"]))]

    @lineage_task(lineage=_lineage)
    def index(batch: dict) -> dict:
        from askflow.ingest.pipeline import index_batch
        from askflow.ingest.provenance import airflow_run

        params = get_current_context()["params"]
        with components_for(params) as components:
            return index_batch(
                components.location(batch["location"]), batch["paths"], store=components.store,
                embeddings=components.embeddings, strategy=strategy_from(params, components),
                source=params["source"], base_url=params["base_url"], audiences=params["audiences"],
                listed=batch.get("listed"), run=airflow_run(get_current_context()),
                answers_source=components.settings.answers_source, requests=lambda: components.requests,
            )

    @lineage_task(lineage=_lineage, trigger_rule="none_failed", outlets=[COLLECTION])
    def prune(results: list[dict], listed: list[dict]) -> dict:
        from askflow.ingest.pipeline import prune_and_finalize

        params = get_current_context()["params"]
        with components_for(params) as components:
            summary = prune_and_finalize(
                [p for batch in listed for p in batch["paths"]], store=components.store,
                embeddings=components.embeddings, source=params["source"],
                answers_source=components.settings.answers_source, allow_empty=bool(params["prune_all"]),
                unavailable={doc_id: why for r in results for doc_id, why in r["unavailable"].items()},
                max_unavailable_share=components.settings.web_max_unavailable_share,
            )
            for key in ("documents_written", "documents_skipped", "chunks_written"):
                summary[key] = sum(r[key] for r in results)
            wrote(COLLECTION, collection_asset(components.settings, components.serving().collection),
                  location=components.location(_location(components, params)).public, source=params["source"],
                  documents_written=summary["documents_written"], chunks_written=summary["chunks_written"])
        print(f"ingestion summary: {summary}")
        return summary

    @task
    def plan_contexts(results: list[dict], listed: list[dict]) -> list[dict]:
        """The listed documents whose chunks need a context, a unit of up to ``batch_size`` each with its share of
        ``ASKFLOW_CONTEXTUAL_MAX_USD_PER_RUN``; none when ``ASKFLOW_CONTEXTUAL_CHUNKS`` is off."""
        from dataclasses import asdict

        params = get_current_context()["params"]
        with components_for(params) as components:
            if not components.settings.contextual_chunks:
                return []
            units = _contextualizer(components).plan(
                [f"{params['source']}:{path}" for batch in listed for path in batch["paths"]],
                documents_per_unit=int(params["batch_size"]))
        print(f"{sum(len(u.doc_ids) for u in units)} documents need contexts, in {len(units)} tasks: "
              f"${sum(u.budget_usd for u in units):.4f} estimated")
        return [asdict(unit) for unit in units]

    @task
    def contextualize(unit: dict) -> dict:
        context = get_current_context()
        with components_for(context["params"]) as components:
            run = _contextualizer(components).run(unit["doc_ids"], budget_usd=unit["budget_usd"],
                                                  run_id=context["run_id"], part=context["ti"].map_index)
        print(f"contexts: {run.model_dump_json()}")
        return run.model_dump(mode="json")

    listed = list_batches()
    indexed = index.expand(batch=listed)
    prune(indexed, listed)
    contextualize.expand(unit=plan_contexts(indexed, listed))


dag = askflow_ingest_docs()
