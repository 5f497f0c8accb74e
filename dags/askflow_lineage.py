"""What the askflow DAGs read and write, named when their tasks run (the names are settings and params, never read
when Airflow parses a DAG file); not a DAG itself.

Two views of the same data flow:

- **Airflow assets.** A task that writes declares an asset alias as its outlet (``COLLECTION``: the vector store's
  collection; ``GRADED_ANSWERS``: the requests whose grades an evaluation run saved) and, once its writes are done,
  ``wrote()`` resolves the alias to the asset the settings name, with what the run read in the event's extra (the
  location, the subscription). The asset graph shows each DAG and what it wrote; a DAG scheduled on an alias runs
  after such an event (the insights DAG after an evaluation run saved grades).
- **OpenLineage datasets.** A ``lineage_task`` names its inputs and outputs (``lineage(context)``) in the START and
  COMPLETE events the OpenLineage provider sends of it: the location it read (a folder as ``file``, a GCS prefix as
  ``gs://BUCKET``, the provider's own conversions), the Slack channel, GitHub repository, Pub/Sub subscription or
  Firestore collection, and the collection it wrote (``postgres://HOST:PORT`` ``DB.public.TABLE``, or
  ``weaviate://HOST``). Marquez or Dataplex (Composer's lineage integration) draws location → ingestion →
  collection and answers → evaluation → graded answers, collection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.bases.decorator import task_decorator_factory

COLLECTION = AssetAlias("askflow-collection")  # the vector store's collection a run wrote
GRADED_ANSWERS = AssetAlias("askflow-graded-answers")  # the requests an evaluation run saved grades of

Lineage = Callable[[dict], tuple[list[Asset], list[Asset]]]  # a task's context -> (inputs, outputs)


def collection_asset(settings, collection: str | None = None) -> Asset:
    """The vector store's collection (``collection``, default the settings'): a pgvector table or a Weaviate
    collection, named without credentials."""
    name = collection or settings.collection
    if settings.vector_store == "weaviate":
        host = urlsplit(settings.weaviate_url or "").hostname or "localhost"
        return Asset(uri=f"weaviate://{host}/{name}", name=f"askflow collection {name}")
    url = urlsplit(settings.database_url or "postgresql://localhost")
    port = f":{url.port}" if url.port else ""
    database = url.path.strip("/") or "postgres"
    return Asset(uri=f"postgres://{url.hostname or 'localhost'}{port}/{database}/public/{name}",
                 name=f"askflow collection {name}")


def location_asset(public: str) -> Asset:
    """A documentation location (as logs show it, without credentials): a folder is a ``file://`` URI, a GCS
    prefix stays ``gs://``, a git location is its repository (the ref left out: a version, not another dataset), a
    website its start URL."""
    if public.startswith("gs://"):
        return Asset(uri=public.rstrip("/") or public, name=public)
    if public.startswith("git+"):
        url, _, subdirectory = public.removeprefix("git+").partition("#subdirectory=")
        repository = url.rsplit("@", 1)[0] if "@" in urlsplit(url).path else url
        return Asset(uri=f"git+{repository}" + (f"/{subdirectory}" if subdirectory else ""), name=public)
    if public.startswith(("https://", "http://")):
        return Asset(uri=public, name=public)
    return Asset(uri=f"file://{quote(str(Path(public).resolve()))}", name=public)


def requests_asset(settings) -> Asset:
    """The requests (answers, their grades) in Firestore."""
    return Asset(uri=f"firestore://{settings.project_id}/{settings.requests_collection}",
                 name=f"askflow requests {settings.requests_collection}")


def subscription_asset(settings) -> Asset:
    """The evaluation subscription the grading events are pulled from."""
    return Asset(uri=f"pubsub://{settings.project_id}/subscriptions/{settings.evaluation_subscription}",
                 name=f"askflow grading {settings.evaluation_subscription}")


def ol_dataset(asset: Asset):
    """The OpenLineage dataset of ``asset``: the provider's own conversion where one exists for its scheme
    (``file``, ``gs``), otherwise the URI's scheme and host as the namespace and its path as the name (OpenLineage's
    naming for Postgres, ``DB.SCHEMA.TABLE``, and Pub/Sub, ``subscription:PROJECT:NAME``)."""
    from airflow.providers.common.compat.openlineage.utils.utils import translate_airflow_asset
    from openlineage.client.event_v2 import Dataset

    if converted := translate_airflow_asset(asset, None):
        return converted
    parts = urlsplit(asset.uri)
    path = parts.path.strip("/")
    if parts.scheme == "postgres":
        return Dataset(namespace=f"postgres://{parts.netloc}", name=path.replace("/", "."))
    if parts.scheme == "pubsub":
        return Dataset(namespace="pubsub", name=f"subscription:{parts.netloc}:{path.rsplit('/', 1)[-1]}")
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=path or "/")


def wrote(alias: AssetAlias, asset: Asset, **extra) -> None:
    """Resolve ``alias`` (one of the running task's outlets) to ``asset``: an asset event, with ``extra``."""
    from airflow.sdk import get_current_context

    get_current_context()["outlet_events"][alias].add(asset, extra={k: v for k, v in extra.items() if v is not None})


class LineageTaskOperator(_PythonDecoratedOperator):
    """A ``@task`` whose OpenLineage START and COMPLETE events name the datasets its ``lineage`` gives
    (the provider's DefaultExtractor calls these methods), read when the task runs."""

    custom_operator_name = "@lineage_task"

    def __init__(self, *, lineage: Lineage, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lineage = lineage

    def _operator_lineage(self, context):
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self.lineage(context)
        return OperatorLineage(inputs=[ol_dataset(a) for a in inputs], outputs=[ol_dataset(a) for a in outputs])

    def get_openlineage_facets_on_start(self):
        from airflow.sdk import get_current_context

        return self._operator_lineage(get_current_context())

    def get_openlineage_facets_on_complete(self, task_instance):  # called after the task's context is gone
        return self._operator_lineage(task_instance.get_template_context())

    def get_openlineage_facets_on_failure(self, task_instance):
        return self._operator_lineage(task_instance.get_template_context())


def lineage_task(*, lineage: Lineage, **kwargs):
    """``@task`` with lineage: ``@lineage_task(lineage=docs_lineage, outlets=[COLLECTION])``."""
    return task_decorator_factory(decorated_operator_class=LineageTaskOperator, lineage=lineage, **kwargs)
