"""Fine-tune the embedding model on what the deployment has, and promote it only if it retrieves better.

``build_pairs`` makes training pairs from the corpus's structure (titles, headings, question headings, cross-reference
links, glossary entries) and the feedback loop's good answers, each with a hard negative from keyword search, and
writes them to the data folder (in Composer, the environment bucket's ``data/``, which every worker mounts): only
their path goes through XCom. ``train`` fine-tunes a challenger from the serving model (sentence-transformers'
trainer, in-batch and hard negatives); it runs on the ``ASKFLOW_TRAINING_QUEUE`` queue, so a Composer deployment
can route it to workers with more CPU and memory (see the README for a separate job instead). ``evaluate`` scores
champion and challenger on the question set with the production retrieval code, each in a collection of its own.
``promote`` embeds the serving collection again with the challenger and switches model and collection in one write,
only if the challenger wins by the margin; the run's record goes to Firestore and the log either way. A rerun with
the same corpus, answers and params reuses the pairs and the trained model. ``rollback=true`` serves the previous
pair again and does nothing else.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS, components_for

# An unset param is the setting, read when its task runs (never when Airflow parses this file).
FROM_SETTINGS = {"questions": "finetune_questions", "steps": "finetune_steps", "batch_size": "finetune_batch_size",
                 "learning_rate": "finetune_learning_rate", "metric": "finetune_metric", "margin": "finetune_margin",
                 "synthetic": "finetune_synthetic_passages"}
# The one value the scheduler needs before any task runs: straight from the environment Terraform sets, without
# loading askflow's settings (nothing validated, nothing that could fail the parse).
TRAINING_QUEUE = os.environ.get("ASKFLOW_TRAINING_QUEUE") or "default"


def _params(settings=None) -> dict:
    """The run's params, each unset one the setting it stands for."""
    from askflow.config import load_settings

    params = dict(get_current_context()["params"])
    unset = [name for name in FROM_SETTINGS if params.get(name) is None]
    if unset:
        settings = settings or load_settings()
        params |= {name: getattr(settings, FROM_SETTINGS[name]) for name in unset}
    return params


@dag(
    dag_id="askflow_finetune_embeddings",
    schedule="@weekly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS | {"retries": 1},
    tags=["askflow", "fine-tuning"],
    params={
        "docs_location": Param(None, type=["null", "string"], description=(
            "the corpus: a folder, gs://BUCKET/PREFIX or git+URL[@REF][#subdirectory=DIR]; "
            "default: gs://<settings.documents_bucket>/")),
        "source": Param("docs", type="string", pattern=r"^[a-z0-9_-]+$",
                        description="the source name the corpus is ingested under"),
        "questions": Param(None, type=["null", "string"], description=(
            "question set that judges (askflow eval retrieval's JSONL); unset: ASKFLOW_FINETUNE_QUESTIONS")),
        "steps": Param(None, type=["null", "integer"], minimum=1, maximum=100_000,
                       description="unset: ASKFLOW_FINETUNE_STEPS"),
        "batch_size": Param(None, type=["null", "integer"], minimum=2, maximum=1024,
                            description="unset: ASKFLOW_FINETUNE_BATCH_SIZE"),
        "learning_rate": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                               description="unset: ASKFLOW_FINETUNE_LEARNING_RATE"),
        "metric": Param(None, enum=[None, "hit@1", "hit@3", "hit@5", "hit@10", "mrr@10"],
                        description="unset: ASKFLOW_FINETUNE_METRIC"),
        "margin": Param(None, type=["null", "number"], minimum=-1, maximum=1,
                        description="unset: ASKFLOW_FINETUNE_MARGIN"),
        "answers": Param(True, type="boolean", description="also learn from the feedback loop's good answers"),
        "synthetic": Param(None, type=["null", "integer"], minimum=0, description=(
            "passages the cheap model writes a question for (needs a chat model; each asked once, ever); unset: "
            "ASKFLOW_FINETUNE_SYNTHETIC_PASSAGES")),
        "rollback": Param(False, type="boolean", description="serve the previous model and collection, nothing else"),
    },
)
def askflow_finetune_embeddings():
    @task.branch
    def start() -> str:
        """Rollback, or a run; a run without a question set to judge by fails here, before any training."""
        from askflow.entrypoints.finetune_steps import question_set

        params = get_current_context()["params"]
        if params["rollback"]:
            return "rollback"
        question_set(_params()["questions"])
        return "build_pairs"

    @task
    def rollback() -> dict:
        from askflow.entrypoints import finetune_steps as steps

        with components_for({}) as components:
            serving = steps.rollback(components)
        print(f"serving again: {serving}")
        return serving

    @task
    def build_pairs() -> dict:
        from askflow.entrypoints import finetune_steps as steps

        with components_for({}) as components:
            params = _params(components.settings)
            location = params["docs_location"] or f"gs://{components.settings.documents_bucket}/"
            pairs = steps.build_pairs(components, location=location, source=params["source"],
                                      answers=params["answers"], synthetic=int(params["synthetic"]))
        print(f"training pairs: {pairs}")
        return pairs | {"location": location, "started_at": dt.datetime.now(dt.timezone.utc).isoformat()}

    @task(queue=TRAINING_QUEUE, execution_timeout=dt.timedelta(hours=6))
    def train(pairs: dict) -> dict:
        from askflow.entrypoints import finetune_steps as steps
        from askflow.service_layer.finetuning import TrainingParams

        with components_for({}) as components:
            params = _params(components.settings)
            training = TrainingParams(steps=int(params["steps"]), batch_size=int(params["batch_size"]),
                                      learning_rate=float(params["learning_rate"]))
            trained = steps.train(components, pairs, training)
        print(f"challenger: {trained}")
        return trained

    @task
    def evaluate(pairs: dict, trained: dict) -> dict:
        from askflow.entrypoints import finetune_steps as steps

        with components_for({}) as components:
            figures = steps.compare(components, location=pairs["location"],
                                    questions=_params(components.settings)["questions"],
                                    challenger=trained["model"]["name"])
        print(f"champion: {figures['champion']}\nchallenger: {figures['challenger']}")
        return figures

    @task
    def promote(pairs: dict, trained: dict, figures: dict) -> dict:
        from askflow.entrypoints import finetune_steps as steps

        with components_for({}) as components:
            params = _params(components.settings)
            run = steps.decide_and_promote(components, pairs=pairs, trained=trained, figures=figures,
                                           metric=params["metric"], margin=float(params["margin"]),
                                           started_at=dt.datetime.fromisoformat(pairs["started_at"]))
            components.finetune_runs.save(run)
        print(f"fine-tuning run: {run.model_dump_json()}")
        return {"run_id": run.run_id, "promoted": run.promoted, "decision": run.decision}

    pairs = build_pairs()
    trained = train(pairs)
    start() >> [rollback(), pairs]
    promote(pairs, trained, evaluate(pairs, trained))


dag = askflow_finetune_embeddings()
