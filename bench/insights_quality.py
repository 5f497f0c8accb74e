"""Question insights, measured. Two parts; one JSON object as the last line, progress on stderr.

1. Agreement with the docs: the dev questions (``QUESTIONS``, askflow eval's JSONL) clustered as the report clusters
   them, against the page their accepted answers linked (questions sharing a gold page are about the same thing):
   adjusted mutual information and purity, for each general setting (HDBSCAN's leaf and eom selection, minimum
   cluster sizes 2, 3 and 5) — reported side by side, not tuned on these questions. Noise counts as one cluster per
   question for AMI; purity is over the questions that were clustered.
2. Speed: a report of 10,000 synthetic requests (``--requests``) stored in the Firestore emulator, built on the local
   stack (reading, embedding questions and top sources, clustering, describing, writing the HTML and CSV).

Usage: ``cd bench && ../.venv/bin/python insights_quality.py [QUESTIONS] [--requests N]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

from _stack import ROOT, temp_data_dir

DEV_QUESTIONS = ROOT.parent / "shared" / "eval" / "airflow-so-dev.jsonl"
TOPICS = [  # (subject, what people ask about it) for synthetic questions
    ("catchup", "stop old DAG runs from running"), ("XComs", "pass data between tasks"),
    ("connections", "store database credentials"), ("pools", "limit how many tasks run at once"),
    ("sensors", "wait for a file to arrive"), ("the scheduler", "see why a DAG is not scheduled"),
    ("retries", "retry a failing task with a delay"), ("variables", "read a setting in a DAG"),
    ("SLAs", "get an alert when a task is late"), ("backfill", "run a DAG for past dates"),
    ("the KubernetesPodOperator", "run a task in its own pod"), ("deferrable operators", "free a worker slot"),
    ("task groups", "group tasks in the graph view"), ("dynamic task mapping", "create tasks from a list"),
    ("timetables", "schedule on business days only"), ("the REST API", "trigger a DAG from outside"),
    ("logging", "send task logs to a bucket"), ("DAG params", "pass a value when triggering a run"),
    ("trigger rules", "run a task even when one upstream failed"), ("datasets", "start a DAG when data changes"),
]
FORMS = ["How do I {what} with {subject}?", "Can {subject} {what}?", "What is the best way to {what} using {subject}?",
         "{subject}: how to {what}", "Why can't I {what} with {subject}?", "Is there a way to {what} ({subject})?"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def agreement(questions_path: Path) -> dict:
    import numpy as np
    from sklearn.metrics import adjusted_mutual_info_score

    from askflow.bootstrap import bootstrap
    from askflow.insights.clustering import NOISE, cluster_vectors
    from askflow.retrieval.query import clean_query

    rows = [json.loads(line) for line in questions_path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("gold")]
    gold = [row["gold"][0] for row in rows]
    with bootstrap() as components:
        embeddings = components.embeddings
        log(f"embedding {len(rows)} questions with {embeddings.name}")
        vectors = np.asarray(embeddings.embed_documents([clean_query(row["question"]).dense for row in rows]))
    results = {"questions": len(rows), "gold_pages": len(set(gold)), "embedding_model": embeddings.name,
               "questions_per_gold_page": dict(Counter(Counter(gold).values())), "settings": []}
    for selection in ("leaf", "eom"):
        for size in (2, 3, 5):
            labels = cluster_vectors(vectors, min_cluster_size=size, selection=selection)
            singletons = [label if label != NOISE else -(i + 2) for i, label in enumerate(labels)]
            clustered = [i for i, label in enumerate(labels) if label != NOISE]
            purity = (sum(Counter(gold[i] for i in clustered if labels[i] == label).most_common(1)[0][1]
                          for label in set(labels) - {NOISE}) / len(clustered)) if clustered else None
            results["settings"].append({
                "selection": selection, "min_cluster_size": size, "clusters": len(set(labels) - {NOISE}),
                "clustered": len(clustered), "ami": round(adjusted_mutual_info_score(gold, singletons), 3),
                "purity": None if purity is None else round(purity, 3)})
            log(f"  {selection}, min size {size}: {results['settings'][-1]}")
    return results


def speed(count: int) -> dict:
    from google.cloud import firestore

    from askflow.adapters.local_embeddings import MINILM
    from askflow.bootstrap import bootstrap
    from askflow.config import Settings
    from askflow.dev.local_stack import LocalStack
    from askflow.domain.model import Rating, Request, RequestStatus, Source
    from askflow.entrypoints import insights_steps
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.sources.files import load_paths

    data_dir = temp_data_dir()
    os.environ["ASKFLOW_DATA_DIR"] = str(data_dir)
    settings = Settings(project_id="askflow-bench", collection="bench_docs", embedding_model=MINILM,
                        requests_collection="bench_requests", data_dir=data_dir)
    stack = LocalStack(settings=settings, log_dir=data_dir / "logs")
    try:
        stack.start_emulators()
        os.environ.update(stack.env)
        with bootstrap(settings) as components:
            index_documents(load_paths([ROOT / "tests" / "data" / "docs"]), store=components.store,
                            embeddings=components.embeddings, strategy=components.strategy(), source="docs")
            end = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
            rng = random.Random(7)
            client = firestore.Client(project=settings.project_id)
            collection = client.collection(settings.requests_collection)
            log(f"storing {count} synthetic requests in the Firestore emulator")
            started = time.perf_counter()
            batch = client.batch()
            for n in range(count):
                subject, what = rng.choice(TOPICS)
                created = end - dt.timedelta(seconds=rng.uniform(0, 14 * 86400))  # this period and the one before
                failed = rng.random() < 0.05
                request = Request(
                    request_id=f"bench-{n}", question=rng.choice(FORMS).format(subject=subject, what=what),
                    created_at=created, status=RequestStatus.FAILED if failed else RequestStatus.COMPLETE,
                    answer=None if failed else f"To {what}, use {subject} [1].",
                    sources=[] if failed else [Source(n=1, title=subject, url=f"https://docs/{n % 40}",
                                                      doc_id=f"docs:{subject}", excerpt=f"{subject} lets you {what}.")],
                    ratings={"asker": Rating(positive=rng.random() < 0.7, at=created)} if rng.random() < 0.3 else {})
                batch.set(collection.document(request.request_id), request.model_dump(exclude_none=True))
                if n % 500 == 499:
                    batch.commit()
                    batch = client.batch()
            batch.commit()
            stored_s = time.perf_counter() - started
            log(f"stored in {stored_s:.0f} s; building the report")
            started = time.perf_counter()
            stages: dict[str, float] = {}
            last = [time.perf_counter(), None]

            def progress(stage: str, done: int, total: int) -> None:
                now = time.perf_counter()
                if last[1] is not None:
                    stages[last[1]] = stages.get(last[1], 0) + now - last[0]
                last[:] = [now, stage]

            report = insights_steps.build(components, period="7d", end=end, min_cluster_size=15, progress=progress)
            build_s = time.perf_counter() - started
        return {"requests_stored": count, "requests_in_period": report.requests,
                "previous_period": report.previous_requests, "clusters": len(report.clusters),
                "noise": report.noise, "gaps": len(report.gaps), "build_s": round(build_s, 1),
                "stage_s": {k: round(v, 1) for k, v in stages.items()}, "store_s": round(stored_s, 1),
                "embedding_model": MINILM}
    finally:
        stack.stop()


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", nargs="?", type=Path, default=DEV_QUESTIONS)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    return {"agreement": agreement(args.questions), "speed": speed(args.requests)}


if __name__ == "__main__":
    print(json.dumps(main()))
