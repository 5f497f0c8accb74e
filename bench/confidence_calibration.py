"""Calibrating "not sure": which retrieval signals tell the questions whose top 5 documents hold a gold page (hits)
from the others (misses), on a question set over a corpus, indexed as ``askflow eval retrieval`` indexes it.

    cd bench && ASKFLOW_EMBEDDING_MODEL=all-MiniLM-L6-v2 ../.venv/bin/python confidence_calibration.py \\
        ../../shared/corpus/airflow-docs ../../shared/eval/airflow-so-dev.jsonl

Per question, beside its hit: the confidence and the "not sure" verdict ``askflow eval retrieval --details`` writes
(the top document's fused score; the verdict of the answer without a model), and the candidate signals:

- ``fused_score``: the top document's fused score (the confidence's value);
- ``dense_cosine``: the cosine of the question to its best passage (the dense search's first chunk);
- ``dense_keyword_overlap``: the share of the dense top 5 documents that are also in the keyword top 5;
- ``rare_words_held``: the share of the question's rare words (in under 1% of the chunks, or in none) that the
  corpus holds at all, and ``vocabulary_held_idf``: the share of the question's words the corpus holds, each word
  weighted by its IDF over the corpus's chunks (a word it lacks weighs as one in no chunk);
- ``fused_margin``: the fused score of the first document less the second's.

The questions are split into two halves (even and odd lines): each signal's ROC AUC (higher = more likely a hit) on
both; a logistic regression of all of them fitted on the even half (the tuning half; its AUC there cross-validated);
for each, the threshold the tuning half chooses (the most misses caught while flagging at most 15% of its questions)
and, on the odd half (the reported half), the share of misses it catches and the share of what it flags that were
misses. A chat model's own judgement is not measured: the retrieval evaluation calls none. The signal the rule would
use is the one with the best AUC on the tuning half; it decides "not sure" only if it reaches an AUC of 0.70 on the
reported half.

Progress on stderr; one JSON object as the last line of stdout. Uses a data folder of its own unless
``ASKFLOW_DATA_DIR`` names one (the corpus is embedded once per folder and model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from _stack import temp_data_dir
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TOP = 5  # a hit: a gold page among the top 5 documents; the overlap compares top-5 lists too
RARE_SHARE = 0.01  # a rare word: in under 1% of the chunks
MAX_FLAGGED = 0.15  # the cap on the share of questions "not sure" may flag
GOOD_AUC = 0.70  # the AUC a signal must reach on the reported half to decide "not sure"
SIGNALS = ("fused_score", "dense_cosine", "dense_keyword_overlap", "rare_words_held", "vocabulary_held_idf",
           "fused_margin")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(corpus: Path, questions_path: Path) -> dict:
    os.environ.setdefault("ASKFLOW_DATA_DIR", str(temp_data_dir()))
    os.environ.setdefault("ASKFLOW_COLLECTION", "bench_confidence")
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints.finetune_steps import identifier
    from askflow.evaluation.retrieval_eval import evaluate, load_corpus, load_questions

    questions = load_questions(questions_path)
    started = time.perf_counter()
    with bootstrap() as components:
        s = components.settings
        store = components.vector_store(f"{s.collection}_eval_{identifier(components.embeddings.name)}")
        if not hasattr(store, "vector_search"):
            raise SystemExit("the calibration reads the dense list alone: it needs ASKFLOW_VECTOR_STORE=pgvector")
        retriever = components.retriever_for(store)
        details = Path(s.data_dir) / "confidence-details.jsonl"
        summary = evaluate(documents=load_corpus(corpus), questions=questions, store=store,
                           embeddings=components.embeddings, retriever=retriever, strategy=components.strategy(),
                           details_path=details, progress=lambda stage, done, total: progress(
                               f"{stage}: {done}/{total}") if done in (0, total) or done % 20 == 0 else None)
        progress(f"retrieval: {summary}")
        evaluated = [json.loads(line) for line in details.read_text(encoding="utf-8").splitlines()]
        idf = CorpusIdf(store)
        rows = []
        for number, (question, row) in enumerate(zip(questions, evaluated, strict=True), start=1):
            rows.append({"hit": bool(row[f"hit@{TOP}"]), "not_sure": row["not_sure"],
                         **signals(question["question"], retriever, store, idf, candidates=s.retrieval_candidates)})
            if number % 10 == 0 or number == len(questions):
                progress(f"signals: {number}/{len(questions)}")
        store.close()
        model = components.embeddings.name
    return {"embedding_model": model, "questions": len(rows), "retrieval": summary,
            **calibration(rows), "wall_s": round(time.perf_counter() - started, 1)}


class CorpusIdf:
    """Document frequencies of words over the store's chunks (what is keyword-indexed), by scikit-learn's
    ``TfidfVectorizer`` (its word pattern, English stop words left out, smoothed IDF)."""

    def __init__(self, store) -> None:
        texts, after = [], None
        while page := store.chunks(after=after, limit=1000):
            texts += [chunk.embedding_text for chunk in page]
            after = page[-1].chunk_id
        vectorizer = TfidfVectorizer(stop_words="english").fit(texts)
        self.words = vectorizer.build_analyzer()
        self._idf = dict(zip(vectorizer.get_feature_names_out(), vectorizer.idf_, strict=True))
        self._unseen = math.log((1 + len(texts)) / 1) + 1  # the smoothed IDF of a word in no chunk
        self._rare = math.log((1 + len(texts)) / (1 + RARE_SHARE * len(texts))) + 1  # in 1% of the chunks

    def held(self, text: str) -> tuple[float, float]:
        """The share of ``text``'s rare words the corpus holds, and the IDF-weighted share of all its words."""
        words = set(self.words(text))
        if not words:
            return 1.0, 1.0
        weights = {word: self._idf.get(word, self._unseen) for word in words}
        rare = [word for word, weight in weights.items() if weight > self._rare]
        rare_held = sum(word in self._idf for word in rare) / len(rare) if rare else 1.0
        return rare_held, sum(w for word, w in weights.items() if word in self._idf) / sum(weights.values())


def signals(question: str, retriever, store, idf: CorpusIdf, *, candidates: int) -> dict[str, float]:
    """The candidate signals of one question (the module's docstring says what each is)."""
    from askflow.retrieval.query import clean_query
    from askflow.retrieval.ranking import rank_documents

    found = retriever.search(question)
    ranked = retriever.rank(found.chunks, question_vector=found.vector)
    query = clean_query(question)
    dense = store.vector_search(found.vector, limit=candidates, audiences=None)
    keywords = store.keyword_search(query.keywords, limit=candidates, audiences=None)
    dense_top = {d.doc_id for d in rank_documents(dense)[:TOP]}
    keyword_top = {d.doc_id for d in rank_documents(keywords)[:TOP]}
    rare_held, idf_held = idf.held(query.keywords)
    return {
        "fused_score": ranked[0].score if ranked else 0.0,
        "dense_cosine": dense[0].score if dense else 0.0,
        "dense_keyword_overlap": len(dense_top & keyword_top) / TOP,
        "rare_words_held": rare_held,
        "vocabulary_held_idf": idf_held,
        "fused_margin": ranked[0].score - ranked[1].score if len(ranked) > 1 else 0.0,
    }


def calibration(rows: list[dict]) -> dict:
    """Each signal's AUC on both halves, the logistic regression fitted on the tuning half, the thresholds the
    tuning half chooses and what they do on the reported half, the rule this leaves, and what the rule flags."""
    hits = np.array([row["hit"] for row in rows], dtype=int)
    values = np.array([[row[name] for name in SIGNALS] for row in rows], dtype=float)
    tuning = np.arange(len(rows)) % 2 == 0
    reported = ~tuning
    combined = make_pipeline(StandardScaler(), LogisticRegression()).fit(values[tuning], hits[tuning])
    candidates = {name: values[:, i] for i, name in enumerate(SIGNALS)}
    candidates["logistic_regression"] = combined.predict_proba(values)[:, 1]
    # the combination's AUC on the tuning half is cross-validated there (5 folds): fitted and scored on the same
    # questions it would always look best
    held_out = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), values[tuning],
                                 hits[tuning], cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                 method="predict_proba")[:, 1]
    figures = {}
    for name, scores in candidates.items():
        threshold = tuned_threshold(scores[tuning], hits[tuning])
        tuning_scores = held_out if name == "logistic_regression" else scores[tuning]
        figures[name] = {"auc_tuning": auc(hits[tuning], tuning_scores),
                         "auc_reported": auc(hits[reported], scores[reported]),
                         "auc_reported_95": bootstrap_auc(hits[reported], scores[reported]),
                         "threshold": threshold,
                         "tuning": flagged(scores[tuning] < threshold, hits[tuning]),
                         "reported": flagged(scores[reported] < threshold, hits[reported])}
    figures["logistic_regression"]["coefficients"] = dict(zip(
        SIGNALS, np.round(combined[-1].coef_[0], 3).tolist(), strict=True))
    chosen = max(figures, key=lambda name: figures[name]["auc_tuning"])
    reached = [name for name, f in figures.items() if f["auc_reported"] >= GOOD_AUC]
    rule_flags = np.array([row["not_sure"] is not None for row in rows])
    return {
        "misses": {"tuning": round(float(1 - hits[tuning].mean()), 3),
                   "reported": round(float(1 - hits[reported].mean()), 3)},
        "signals": figures,
        "chosen_on_tuning_half": chosen,
        "chosen_auc_reported": figures[chosen]["auc_reported"],
        "reaching_auc_on_reported_half": reached,
        "rule": ("a threshold on " + chosen) if figures[chosen]["auc_reported"] >= GOOD_AUC else
                "no source matched, or the model says the sources do not cover it",
        "rule_flags": {"tuning": flagged(rule_flags[tuning], hits[tuning]),
                       "reported": flagged(rule_flags[reported], hits[reported])},
    }


def auc(hits: np.ndarray, scores: np.ndarray) -> float:
    return round(float(roc_auc_score(hits, scores)), 3)


def bootstrap_auc(hits: np.ndarray, scores: np.ndarray, *, draws: int = 2000) -> list[float]:
    """The 95% interval of the AUC over questions drawn again with replacement (how much 28 questions say)."""
    random = np.random.default_rng(0)
    found = []
    for _ in range(draws):
        drawn = random.integers(0, len(hits), len(hits))
        if 0 < hits[drawn].sum() < len(drawn):
            found.append(roc_auc_score(hits[drawn], scores[drawn]))
    return np.round(np.percentile(found, [2.5, 97.5]), 3).tolist()


def tuned_threshold(scores: np.ndarray, hits: np.ndarray) -> float:
    """The threshold (flag below it) that catches the most misses while flagging at most ``MAX_FLAGGED`` of the
    questions, halfway between the highest value it flags and the next (the lower one of equals)."""
    ordered = np.sort(np.unique(scores))
    best, caught = float(ordered[0]), 0
    for low, high in zip(ordered, ordered[1:], strict=False):
        threshold = float((low + high) / 2)
        flags = scores < threshold
        if flags.mean() > MAX_FLAGGED:
            break
        misses = int((flags & (hits == 0)).sum())
        if misses > caught:
            best, caught = threshold, misses
    return round(best, 4)


def flagged(flags: np.ndarray, hits: np.ndarray) -> dict[str, float | None]:
    """What flagging ``flags`` does: the share of questions flagged, the share of misses caught, and the share of
    the flagged that were misses (``None``: nothing flagged)."""
    misses = hits == 0
    return {"flagged": round(float(flags.mean()), 3),
            "misses_caught": round(float((flags & misses).sum() / max(misses.sum(), 1)), 3),
            "flagged_were_misses": round(float((flags & misses).sum() / flags.sum()), 3) if flags.any() else None}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("questions", type=Path)
    arguments = parser.parse_args()
    print(json.dumps(main(arguments.corpus, arguments.questions)))
