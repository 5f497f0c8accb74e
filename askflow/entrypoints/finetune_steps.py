"""The fine-tuning run's steps over the components, as ``askflow finetune`` runs them in one go and the
``askflow_finetune_embeddings`` DAG runs them as tasks. Only small dicts (paths, names, figures) go from one step to
the next, so they travel through XCom; the pairs and the model stay where they were written."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path
from typing import Any

from askflow.domain.clock import utcnow
from askflow.domain.errors import InvalidInput
from askflow.domain.model import FinetuneRun, TrainedModel
from askflow.evaluation.retrieval_eval import EVAL_SOURCE, evaluate, load_questions
from askflow.service_layer import finetuning


def workdir(components) -> Path:
    """Pairs and run records: under ``ASKFLOW_DATA_DIR`` (in Composer, a folder of the environment's bucket that every
    worker mounts, ``/home/airflow/gcs/data``)."""
    return components.settings.data_dir / "finetune"


def question_set(questions: str | Path | None) -> Path:
    """The question set that judges, checked before anything is trained."""
    if not questions or not Path(questions).is_file():
        raise InvalidInput(f"fine-tuning needs a question set to judge by (ASKFLOW_FINETUNE_QUESTIONS or the questions "
                           f"param, askflow eval retrieval's JSONL); got {str(questions or '') or 'none'!r}")
    return Path(questions)


def build_pairs(components, *, location: str, source: str, answers: bool, synthetic: int = 0) -> dict[str, Any]:
    """:param synthetic: passages the cheap model writes a question for (none without a chat model)."""
    opened = components.location(location)
    documents = [opened.load(relative, source=source, base_url=None) for relative in opened.list()]
    good = components.requests.recent_good(1000) if answers else []
    components.store.ensure_collection(components.embeddings.dimension)  # hard negatives come from its keywords
    pair_set = finetuning.build_pairs(documents, answers=good, strategy=components.strategy(),
                                      store=components.store, workdir=workdir(components),
                                      chat_model=components.chat_model(components.settings.cheap_model),
                                      synthetic_limit=synthetic)
    return {"path": str(pair_set.path), "fingerprint": pair_set.fingerprint, "by_kind": pair_set.by_kind,
            "reused": pair_set.reused, "sample": finetuning.pair_sample(pair_set.path)}


def train(components, pairs: dict[str, Any], params: finetuning.TrainingParams, *,
          progress: bool = False) -> dict[str, Any]:
    pair_set = finetuning.PairSet(Path(pairs["path"]), pairs["fingerprint"], pairs["by_kind"], reused=True)
    trained, now = finetuning.train_challenger(pair_set, trainer=components.trainer(progress=progress),
                                               base_model=components.serving().model, params=params,
                                               models_dir=components.models_dir)
    return {"model": trained.model_dump(), "trained_now": now}


def compare(components, *, location: str, questions: str, challenger: str) -> dict[str, dict[str, float]]:
    """Champion (the serving model) and challenger on the question set, each over the corpus in an evaluation
    collection of its own, with the production retrieval code."""
    opened = components.location(location)
    documents = [opened.load(relative, source=EVAL_SOURCE, base_url=None) for relative in opened.list()]
    rows = load_questions(question_set(questions))
    figures = {}
    for role, model in (("champion", components.serving().model), ("challenger", challenger)):
        print(f"evaluating the {role}, {model} ...", file=sys.stderr, flush=True)
        embeddings = components.embeddings_for(model)
        store = components.vector_store(f"{components.settings.collection}_eval_{identifier(model)}")
        try:
            figures[role] = evaluate(documents=documents, questions=rows, store=store, embeddings=embeddings,
                                     retriever=components.retriever_for(store, embeddings),
                                     strategy=components.strategy())
        finally:
            store.close()
    return figures


def decide_and_promote(components, *, pairs: dict[str, Any], trained: dict[str, Any],
                       figures: dict[str, dict[str, float]], metric: str, margin: float,
                       started_at=None) -> FinetuneRun:
    """Promote the challenger if it is better by ``margin``; returns the run's record (also kept by the caller)."""
    challenger = TrainedModel.model_validate(trained["model"])
    current = components.serving()
    promote, reason = finetuning.decide(figures["champion"], figures["challenger"], metric=metric, margin=margin)
    serving = current
    if promote:
        collection = finetuning.collection_for(components.settings.collection, challenger.name)
        target = components.vector_store(collection)
        try:
            serving = finetuning.promote(
                challenger, current=current, serving=components.serving_index, source=components.store,
                target=target, target_collection=collection, embeddings=components.embeddings_for(challenger.name),
                reason=reason,
            )
        finally:
            target.close()
    return FinetuneRun(
        run_id=uuid.uuid4().hex, base_model=current.model, pairs_fingerprint=pairs["fingerprint"],
        pairs=sum(pairs["by_kind"].values()), pairs_by_kind=pairs["by_kind"], challenger=challenger,
        trained_now=trained["trained_now"], champion_metrics=figures["champion"],
        challenger_metrics=figures["challenger"], metric=metric, margin=margin, promoted=promote, decision=reason,
        serving=serving, started_at=started_at or utcnow(), finished_at=utcnow(),
    )


def rollback(components) -> dict[str, Any]:
    return finetuning.rollback(components.serving_index).model_dump(mode="json")


def identifier(name: str) -> str:
    """A model name as part of a collection name: one evaluation collection per embedding model, so that models
    can be compared without re-embedding and a collection never mixes dimensions."""
    return re.sub(r"\W+", "_", name).strip("_").lower()
