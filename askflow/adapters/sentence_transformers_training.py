"""SentenceTransformersTrainer: fine-tunes a sentence-transformers model with its own trainer and
``CachedMultipleNegativesRankingLoss`` (each anchor against its positive, its hard negative, and every other passage
in the batch; memory bounded by a mini-batch), in this process, on the CPU. Part of the ``local`` extra, like the
models themselves."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from askflow.domain.model import TrainedModel
from askflow.ports import EmbeddingTrainer, TrainingRow

log = logging.getLogger(__name__)


class SentenceTransformersTrainer(EmbeddingTrainer):
    """:param base: loads a fresh copy of the model to start from (never the instance that serves questions).
    :param base_name: its name, the prefix of the challenger's. :param progress: show a progress bar (stderr)."""

    def __init__(self, *, base: Callable[[], Any], base_name: str, progress: bool = False,
                 mini_batch: int = 8) -> None:
        self._base = base
        self._base_name = base_name
        self._progress = progress
        self._mini_batch = mini_batch

    def train(self, pairs: Sequence[TrainingRow], *, models_dir: Path, steps: int, batch_size: int,
              learning_rate: float, seed: int) -> TrainedModel:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            losses,
        )
        from sentence_transformers.training_args import BatchSamplers

        model = self._base()
        data = Dataset.from_dict({"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs],
                                  "negative": [p.negative for p in pairs]})
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".training-") as scratch:
            arguments = SentenceTransformerTrainingArguments(
                output_dir=str(Path(scratch) / "checkpoints"), max_steps=steps, per_device_train_batch_size=batch_size,
                learning_rate=learning_rate, warmup_steps=max(1, steps // 10), seed=seed, save_strategy="no",
                report_to="none",
                logging_steps=max(1, steps // 10), use_cpu=True, disable_tqdm=not self._progress,
                batch_sampler=BatchSamplers.NO_DUPLICATES,  # an in-batch negative is never a copy of the positive
                dataloader_drop_last=len(pairs) > batch_size,
            )
            # the cached form of MultipleNegativesRankingLoss (GradCache): the same loss over the whole batch, with
            # activations held for mini-batches only; the plain loss took all 24 GB of this machine for
            # all-mpnet-base-v2 at 32 triplets
            loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=min(batch_size, self._mini_batch),
                                                             show_progress_bar=False)
            trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=data, loss=loss)
            started, cpu_started = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its losses: progress, not results
                trainer.train()
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            saved = Path(scratch) / "model"
            model.save(str(saved))
            sha256 = _folder_sha256(saved)
            name = f"{self._base_name.rsplit('-ft-', 1)[0]}-ft-{sha256[:12]}"
            target = models_dir / name
            if not (target / "modules.json").is_file():
                if target.exists():
                    shutil.rmtree(target)
                saved.rename(target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        log.info("trained %s on %d pairs in %.0f s (%.0f CPU s)", name, len(pairs), seconds, cpu_seconds)
        return TrainedModel(name=name, path=str(target), sha256=sha256, base_model=self._base_name, pairs=len(pairs),
                            steps=steps, seconds=round(seconds, 1), cpu_seconds=round(cpu_seconds, 1),
                            size_bytes=size)


def _folder_sha256(folder: Path) -> str:
    """One hash over every file's relative path and bytes: the model's identity."""
    digest = hashlib.sha256()
    for file in sorted(f for f in folder.rglob("*") if f.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\x00")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
