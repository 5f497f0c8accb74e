"""Fine-tuning's gain and cost: the serving embedding model (champion) against one fine-tuned for one epoch on the
corpus's own training pairs (challenger), on a question set, with the production hybrid retrieval. The questions
only judge: none is a training pair, and nothing is tuned on them (the params are the settings' defaults), so the
two halves (even and odd lines) are reported apart to show how much of a difference is noise.

    cd bench && ASKFLOW_EMBEDDING_MODEL=all-MiniLM-L6-v2 ../.venv/bin/python finetune_gain.py \\
        ../../shared/corpus/airflow-docs ../../shared/eval/airflow-so-dev.jsonl [--steps N] [--kinds title,heading]

``--steps`` defaults to one epoch; ``--kinds`` trains on those kinds of pairs only (which kinds help).

Progress on stderr; one JSON object as the last line of stdout. Uses a data folder of its own (models, collections).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

from _stack import temp_data_dir


def main(corpus: Path, questions: Path, *, steps: int | None = None, kinds: list[str] | None = None) -> dict:
    os.environ.setdefault("ASKFLOW_DATA_DIR", str(temp_data_dir()))
    os.environ.setdefault("ASKFLOW_COLLECTION", "bench_finetune")
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints import finetune_steps as finetune
    from askflow.evaluation.retrieval_eval import EVAL_SOURCE, evaluate, load_questions
    from askflow.service_layer.finetuning import TrainingParams

    with bootstrap() as components:
        s = components.settings
        started = time.perf_counter()
        # the champion's evaluation collection holds the corpus (it is scored there anyway): hard negatives come from
        # its keyword search, and the pairs name pages as it does
        from askflow.ingest.indexing import index_documents
        from askflow.service_layer.finetuning import build_pairs

        opened = components.location(str(corpus))
        documents = [opened.load(r, source=EVAL_SOURCE, base_url=None) for r in opened.list()]
        champion = components.serving().model
        champion_store = components.vector_store(f"{s.collection}_eval_{finetune.identifier(champion)}")
        index_documents(documents, store=champion_store, embeddings=components.embeddings,
                        strategy=components.strategy(), source=EVAL_SOURCE)
        pair_set = build_pairs(documents, answers=[], strategy=components.strategy(), store=champion_store,
                               workdir=finetune.workdir(components))
        champion_store.close()
        pairs = {"path": str(pair_set.path), "fingerprint": pair_set.fingerprint, "by_kind": pair_set.by_kind}
        if kinds:
            pairs = _only(pairs, kinds)
        count = sum(pairs["by_kind"].values())
        params = TrainingParams(steps=steps or math.ceil(count / s.finetune_batch_size),
                                batch_size=s.finetune_batch_size, learning_rate=s.finetune_learning_rate)
        print(f"{count} pairs {pairs['by_kind']}; {params.steps} steps of {params.batch_size}", file=sys.stderr,
              flush=True)
        trained = finetune.train(components, pairs, params, progress=True)
        rows = load_questions(questions)
        halves = {"all": rows, "even": rows[0::2], "odd": rows[1::2]}
        figures: dict = {}
        for role, model in (("champion", champion), ("challenger", trained["model"]["name"])):
            embeddings = components.embeddings_for(model)
            store = components.vector_store(f"{s.collection}_eval_{finetune.identifier(model)}")
            retriever = components.retriever_for(store, embeddings)
            figures[role] = {name: evaluate(documents=documents, questions=part, store=store, embeddings=embeddings,
                                            retriever=retriever, strategy=components.strategy())
                             for name, part in halves.items()}
            print(f"{role} {model}: {figures[role]['all']}", file=sys.stderr, flush=True)
            store.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
    gain = {half: {m: round(figures["challenger"][half][m] - figures["champion"][half][m], 4)
                   for m in ("hit@1", "hit@5", "hit@10", "mrr@10")} for half in halves}
    return {"base_model": s.embedding_model, "kinds": kinds or "all", "steps": params.steps, "pairs": count,
            "pairs_by_kind": pairs["by_kind"],
            "training": trained["model"] | {"trained_now": trained["trained_now"]}, "figures": figures, "gain": gain,
            "wall_s": round(time.perf_counter() - started, 1),
            "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def _only(pairs: dict, kinds: list[str]) -> dict:
    """The pair set restricted to some kinds, written beside it."""
    from askflow.service_layer.finetuning import read_pairs

    path = Path(pairs["path"])
    kept = [p for p in read_pairs(path) if p.kind in kinds]
    subset = path.with_name(f"{path.stem}-{'-'.join(sorted(kinds))}.jsonl")
    subset.write_text("".join(json.dumps(p.to_row()) + "\n" for p in kept))
    by_kind = {kind: n for kind, n in pairs["by_kind"].items() if kind in kinds}
    return pairs | {"path": str(subset), "fingerprint": f"{pairs['fingerprint']}-{'-'.join(sorted(kinds))}",
                    "by_kind": by_kind}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--kinds", type=lambda text: text.split(","))
    arguments = parser.parse_args()
    print(json.dumps(main(arguments.corpus, arguments.questions, steps=arguments.steps, kinds=arguments.kinds)))
