"""The offline embedding models: each loads from what its wheels carry, with no network."""

from __future__ import annotations

import numpy as np
import pytest

from askflow.adapters.local_embeddings import MPNET, LocalEmbeddings
from askflow.domain.errors import ConfigurationError


def test_mpnet_is_unpacked_once_from_its_wheels_and_ranks_a_paraphrase_first(tmp_path):
    model = LocalEmbeddings(model=MPNET, cache_dir=tmp_path)
    vectors = np.array(model.embed_documents([
        "How do I pull an XCom from another task?",
        "Fetching the value an upstream task pushed to XCom",
        "Configuring the SMTP server for email alerts",
    ]))
    assert vectors.shape == (3, model.dimension) == (3, 768)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2

    weights = tmp_path / MPNET / "model.safetensors"
    unpacked_at = weights.stat().st_mtime_ns
    again = LocalEmbeddings(model=MPNET, cache_dir=tmp_path)
    assert np.allclose(again.embed_query("How do I pull an XCom from another task?"), vectors[0], atol=1e-5)
    assert weights.stat().st_mtime_ns == unpacked_at
    assert [p.name for p in tmp_path.iterdir()] == [MPNET]


def test_an_unknown_local_model_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="all-MiniLM-L6-v2, all-mpnet-base-v2"):
        LocalEmbeddings(model="bge-small-en", cache_dir=tmp_path)
