"""Fine-tuning the embedding model, as steps an orchestrator can run apart: build the training pairs, train a
challenger, evaluate champion and challenger side by side, promote the challenger only if it is better.

Every step is keyed by what it depends on, so a rerun with an unchanged corpus, answers and params reuses the pairs
(``pairs-<fingerprint>.jsonl``) and the trained model instead of building them again. Promotion embeds the serving
collection again into a collection of the challenger's own and then switches model and collection together, in one
write (``ServingIndex.switch``); rolling back is one more switch.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from askflow.domain.clock import utcnow
from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document, Request, Serving, TrainedModel, content_hash
from askflow.finetune.pairs import (
    TrainingPair,
    answer_pairs,
    corpus_pairs,
    pair_set_fingerprint,
    passages,
    synthetic_key,
    synthetic_pairs,
    synthetic_questions,
    with_hard_negatives,
)
from askflow.ingest.chunking import ChunkingStrategy, resha
from askflow.ports import ChatModel, Embeddings, EmbeddingTrainer, ServingIndex, TrainingRow, VectorStore

log = logging.getLogger(__name__)
METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "mrr@10")


@dataclass(frozen=True)
class TrainingParams:
    steps: int = 100
    batch_size: int = 32
    learning_rate: float = 3e-5
    seed: int = 13

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or not 0 < self.learning_rate < 1:
            raise InvalidInput("training needs steps >= 1, batch_size >= 2 and 0 < learning_rate < 1")

    @property
    def key(self) -> str:
        return f"{self.steps}:{self.batch_size}:{self.learning_rate}:{self.seed}"


@dataclass(frozen=True)
class PairSet:
    """Training pairs written once to ``path`` and passed on by reference."""

    path: Path
    fingerprint: str
    by_kind: dict[str, int]
    reused: bool

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())


def build_pairs(documents: Sequence[Document], *, answers: Sequence[Request], strategy: ChunkingStrategy,
                store: VectorStore, workdir: Path, chat_model: ChatModel | None = None,
                synthetic_limit: int = 0) -> PairSet:
    """Pairs from the corpus's structure and the good answers, and (with a chat model and ``synthetic_limit`` > 0)
    questions the model writes for up to that many passages, each pair with a hard negative from keyword search of
    ``store``; written to ``workdir`` (a shared folder or bucket mount in production). Reused when the corpus, the
    answers and the extraction are unchanged; a synthetic question is asked once per passage and model, ever."""
    asking = chat_model is not None and synthetic_limit > 0
    synthetic = f"{chat_model.name}:{synthetic_limit}" if asking else ""
    fingerprint = pair_set_fingerprint(documents, answers, strategy, synthetic=synthetic)
    path = workdir / f"pairs-{fingerprint}.jsonl"
    if path.is_file():
        return PairSet(path, fingerprint, dict(Counter(p.kind for p in read_pairs(path))), reused=True)
    pairs = corpus_pairs(documents, strategy) + answer_pairs(answers)
    workdir.mkdir(parents=True, exist_ok=True)
    if asking:
        asked, complete = _synthetic(documents, strategy, chat_model, limit=synthetic_limit,
                                                cache=workdir / "synthetic.jsonl")
        pairs += asked
        if not complete:  # the model skipped some passages: usable now, built again next time
            path = path.with_suffix(".partial.jsonl")
    if not pairs:
        raise InvalidInput("no training pairs: the corpus has no titled pages or sections, and no good answers")
    pairs = with_hard_negatives(pairs, store)
    _write_whole(path, "".join(json.dumps(p.to_row()) + "\n" for p in pairs))
    return PairSet(path, fingerprint, dict(Counter(p.kind for p in pairs)), reused=False)


def _synthetic(documents: Sequence[Document], strategy: ChunkingStrategy, model: ChatModel, *, limit: int,
               cache: Path) -> tuple[list[TrainingPair], bool]:
    """The synthetic pairs, and whether every passage has its question."""
    chunks = passages(documents, strategy, limit=limit)
    known = dict(json.loads(line) for line in cache.read_text().splitlines()) if cache.is_file() else {}
    missing = [c for c in chunks if synthetic_key(model.name, c) not in known]
    if missing:
        asked, usage = synthetic_questions(missing, model)
        tokens = sum(u.prompt_tokens + u.completion_tokens for u in usage)
        print(f"synthetic questions: {len(asked)} of {len(missing)} passages, {len(usage)} calls, {tokens} tokens",
              file=sys.stderr, flush=True)
        known |= asked
        _write_whole(cache, "".join(json.dumps([key, question]) + "\n" for key, question in known.items()))
    pairs = synthetic_pairs(chunks, known, model=model.name)
    return pairs, len(pairs) == len(chunks)


def _write_whole(path: Path, text: str) -> None:
    """Whole or not at all: a concurrent run never reads half a file."""
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)


def read_pairs(path: Path) -> list[TrainingPair]:
    return [TrainingPair(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def train_challenger(pair_set: PairSet, *, trainer: EmbeddingTrainer, base_model: str, params: TrainingParams,
                     models_dir: Path) -> tuple[TrainedModel, bool]:
    """The challenger for these pairs and params: trained now, or the one an earlier run trained (``False``)."""
    record = models_dir / f"trained-{content_hash(base_model, pair_set.fingerprint, params.key)[:16]}.json"
    if record.is_file():
        trained = TrainedModel.model_validate_json(record.read_text())
        if (Path(trained.path) / "modules.json").is_file():
            return trained, False
    rng = random.Random(params.seed)
    pairs = read_pairs(pair_set.path)
    rows = [TrainingRow(p.anchor, p.positive, p.negative or rng.choice(pairs).positive) for p in pairs]
    print(f"training {base_model} on {len(rows)} pairs for {params.steps} steps ...", file=sys.stderr, flush=True)
    trained = trainer.train(rows, models_dir=models_dir, steps=params.steps, batch_size=params.batch_size,
                            learning_rate=params.learning_rate, seed=params.seed)
    record.write_text(trained.model_dump_json())
    return trained, True


def decide(champion: dict[str, float], challenger: dict[str, float], *, metric: str,
           margin: float) -> tuple[bool, str]:
    """Promote only if the challenger beats the champion on ``metric`` by at least ``margin``."""
    if metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    gain = challenger[metric] - champion[metric]
    verdict = "promoted" if gain >= margin else "not promoted: the current model stays"
    return gain >= margin, (f"{verdict}; {metric} {challenger[metric]:.3f} against {champion[metric]:.3f} "
                            f"(gain {gain:+.3f}, margin {margin})")


def promote(trained: TrainedModel, *, current: Serving, serving: ServingIndex, source: VectorStore,
            target: VectorStore, target_collection: str, embeddings: Embeddings, reason: str,
            page: int = 256) -> Serving:
    """Embed every chunk of the serving collection again with the challenger into ``target``, then switch the
    serving model and collection together. Until the switch, questions are answered from the old pair."""
    target.ensure_collection(embeddings.dimension)
    after, copied = None, 0
    while chunks := source.chunks(after=after, limit=page):
        target.upsert([resha(c, embeddings.name) for c in chunks],
                      embeddings.embed_documents([c.embedding_text for c in chunks]))
        after, copied = chunks[-1].chunk_id, copied + len(chunks)
        print(f"  re-embedded {copied} chunks", file=sys.stderr, flush=True)
    target.finalize_writes()
    switched = Serving(model=trained.name, collection=target_collection, base_model=current.base_model,
                       switched_at=utcnow(), reason=reason, previous=current.model_copy(update={"previous": None}))
    serving.switch(switched)
    return switched


def rollback(serving: ServingIndex) -> Serving:
    """Serve the pair that served before the last switch (its collection is kept, so this is one write)."""
    current = serving.get()
    if current is None or current.previous is None:
        raise InvalidInput("nothing to roll back to: no model was promoted")
    restored = current.previous.model_copy(update={
        "switched_at": utcnow(), "reason": f"rolled back from {current.model}",
        "previous": current.model_copy(update={"previous": None})})
    serving.switch(restored)
    return restored


def collection_for(base_collection: str, model: str) -> str:
    """A model's own collection: vectors of one model only, named after it."""
    return f"{base_collection}__{re.sub(r'[^a-z0-9]+', '_', model.lower()).strip('_')}"


def pair_sample(path: Path, per_kind: int = 2) -> dict[str, list[dict]]:
    """A few pairs of each kind, for the run's log."""
    sample: dict[str, list[dict]] = {}
    for pair in read_pairs(path):
        if len(sample.setdefault(pair.kind, [])) < per_kind:
            sample[pair.kind].append({"anchor": pair.anchor[:100], "positive": pair.positive[:100]})
    return sample

