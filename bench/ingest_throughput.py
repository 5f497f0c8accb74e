"""Ingestion throughput: chunks/second end to end (load + split + embed + write to pgvector) as a ratio to the raw
embedding throughput of the same model on the same chunks, measured in the same run (target ≥ 0.8); and the time
of a re-run over the unchanged corpus as a share of the full run (target ≤ 5 %). Prints one JSON object last."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _stack import DOCS, ROOT, temp_data_dir

CORPUS = ROOT.parent / "shared" / "corpus" / "airflow-docs"


def main(corpus: Path) -> dict:
    os.environ["ASKFLOW_DATA_DIR"] = str(temp_data_dir())
    from askflow.adapters.local_embeddings import MINILM
    from askflow.bootstrap import bootstrap
    from askflow.config import Settings
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.sources.files import load_paths

    # The faster offline model: the pipeline's own cost is the larger share next to it, so the stricter test.
    components = bootstrap(Settings(project_id="askflow-bench", collection="bench_ingest", embedding_model=MINILM))
    embeddings, strategy = components.embeddings, components.strategy()
    embeddings.embed_documents(["warm up the model"])
    components.store.ensure_collection(embeddings.dimension)

    documents = load_paths([corpus], source="docs")
    chunks = [c for d in documents for c in strategy.split(d, strategy.document_sha(d, embeddings.name))]
    started = time.perf_counter()
    embeddings.embed_documents([c.embedding_text for c in chunks])
    raw_s = time.perf_counter() - started

    started = time.perf_counter()
    full = index_documents(load_paths([corpus], source="docs"), store=components.store, embeddings=embeddings,
                           strategy=strategy, source="docs")
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    rerun = index_documents(load_paths([corpus], source="docs"), store=components.store, embeddings=embeddings,
                            strategy=strategy, source="docs")
    rerun_s = time.perf_counter() - started
    components.close()
    raw_rate = len(chunks) / raw_s
    end_to_end_rate = full.chunks_written / full_s
    return {
        "corpus": str(corpus), "documents": len(documents), "chunks": full.chunks_written,
        "raw_embedding_chunks_per_s": round(raw_rate, 1),
        "end_to_end_chunks_per_s": round(end_to_end_rate, 1),
        "ratio_to_raw_embedding": round(end_to_end_rate / raw_rate, 3), "target_ratio": 0.8,
        "stage_seconds": {k: round(v, 2) for k, v in full.seconds.items()},
        "full_run_s": round(full_s, 2), "rerun_unchanged_s": round(rerun_s, 3),
        "rerun_share_of_full": round(rerun_s / full_s, 4), "target_rerun_share": 0.05,
        "rerun_chunks_written": rerun.chunks_written,
    }


if __name__ == "__main__":
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else (CORPUS if CORPUS.is_dir() else DOCS)
    print(json.dumps(main(corpus)))
