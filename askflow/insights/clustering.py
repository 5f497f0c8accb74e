"""Grouping questions: HDBSCAN over their embeddings (scikit-learn; noise stays noise), and cluster labels by
class-based TF-IDF (BERTopic's c-TF-IDF: a term's frequency in the cluster, weighted by how rare it is across
clusters)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOISE = -1


def cluster_vectors(vectors: Sequence[Sequence[float]], *, min_cluster_size: int, selection: str = "leaf") -> list[int]:
    """A cluster number per vector (``NOISE`` for those in no cluster), numbered by size, largest first.

    The vectors are normalised, so Euclidean distance orders pairs as cosine similarity does. ``selection``:
    HDBSCAN's ``leaf`` (the finest clusters of the hierarchy: one per topic people ask about) or ``eom`` (the most
    persistent ones, which tend to merge neighbouring topics into one)."""
    from sklearn.cluster import HDBSCAN

    if len(vectors) < max(2, min_cluster_size):
        return [NOISE] * len(vectors)
    matrix = np.asarray(vectors, dtype=np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    found = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1, cluster_selection_method=selection,
                    copy=True).fit_predict(matrix)
    sizes = {label: int((found == label).sum()) for label in set(found.tolist()) if label != NOISE}
    renumbered = {label: n for n, label in enumerate(sorted(sizes, key=lambda label: (-sizes[label], label)))}
    return [renumbered.get(label, NOISE) for label in found.tolist()]


def distinctive_terms(texts_by_cluster: Sequence[Sequence[str]], *, top: int = 4) -> list[list[str]]:
    """The ``top`` words (or two-word phrases) that set each cluster's texts apart from the others' (c-TF-IDF)."""
    from sklearn.feature_extraction.text import CountVectorizer

    documents = [" ".join(texts) for texts in texts_by_cluster]
    if not any(document.strip() for document in documents):
        return [[] for _ in documents]
    vectorizer = CountVectorizer(stop_words="english", ngram_range=(1, 2), token_pattern=r"(?u)\b[A-Za-z][\w.-]+\b")
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(float)
    except ValueError:  # only stop words
        return [[] for _ in documents]
    frequency = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    average_words = counts.sum() / len(documents)
    weights = frequency * np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    terms = vectorizer.get_feature_names_out()
    labels = []
    for row in weights:
        chosen: list[str] = []
        for index in np.argsort(-row):
            if row[index] <= 0 or len(chosen) == top:
                break
            term = str(terms[index])
            if not any(term in kept or kept in term for kept in chosen):  # "dag run" and "run": one of them
                chosen.append(term)
        labels.append(chosen)
    return labels


def nearest_to_centre(vectors: np.ndarray, *, count: int) -> list[int]:
    """Indexes of the ``count`` rows nearest the rows' mean direction, nearest first."""
    normalised = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centre = normalised.mean(axis=0)
    return [int(i) for i in np.argsort(-(normalised @ centre))[:count]]
