"""Rank fusion: weighted reciprocal rank fusion of result lists (the hybrid search of stores that fuse in the client,
and a question fused with its rewordings)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from askflow.domain.model import ScoredChunk

RRF_K = 60


def weighted_rrf(
    rankings: Sequence[Sequence[Hashable]], *, weights: Sequence[float] | None = None, k: int = RRF_K
) -> list[tuple[Hashable, float]]:
    """Weighted reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, best first."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    scores: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight <= 0:
            continue
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)


def fuse_results(results: Sequence[Sequence[ScoredChunk]], *, weights: Sequence[float]) -> list[ScoredChunk]:
    by_id = {sc.chunk.chunk_id: sc.chunk for result in results for sc in result}
    fused = weighted_rrf([[sc.chunk.chunk_id for sc in result] for result in results], weights=weights)
    return [ScoredChunk(by_id[cid], score) for cid, score in fused]


def fuse_queries(original: Sequence[ScoredChunk], reworded: Sequence[Sequence[ScoredChunk]], *,
                 reworded_weight: float) -> list[ScoredChunk]:
    """The user's own question's results (weighing most) fused with those of its rewordings."""
    if not reworded:
        return list(original)
    return fuse_results([original, *reworded], weights=[1.5] + [reworded_weight] * len(reworded))
