"""``askflow``: ask, ingest, demo and evaluate from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path

from askflow.config import SPLITTERS
from askflow.domain.errors import AskflowError, InvalidInput

SAMPLE_QUESTION = "How does askflow answer a question, and what happens when no LLM is configured?"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        # Library deprecation chatter (grpcio's post-quantum notice, platformdirs) is not for the CLI's user.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", module="platformdirs")
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except AskflowError as error:
        print(f"askflow: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="askflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a question with cited sources")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the full answer record as JSON")
    ask.set_defaults(run=_ask)

    ingest = commands.add_parser("ingest", help="index .md/.mdx/.rst/.html from files, folders, GCS or git")
    ingest.add_argument("paths", nargs="+", metavar="LOCATION",
                        help="a file or folder, gs://BUCKET/PREFIX, or git+URL[@REF][#subdirectory=DIR]")
    ingest.add_argument("--source", default="docs", help="source name; pruning stays within it (default: docs)")
    ingest.add_argument("--base-url", help="URL prefix for the documents' links (default: file URLs)")
    _strategy_options(ingest)
    ingest.add_argument("--no-prune", action="store_true", help="keep stored documents missing from the locations")
    ingest.set_defaults(run=_ingest)

    demo = commands.add_parser("demo", help="start the local stack, ingest this project's docs, ask, keep running")
    demo.add_argument("--question", default=SAMPLE_QUESTION)
    demo.add_argument("--no-wait", action="store_true", help="stop after printing the answer")
    demo.set_defaults(run=_demo)

    evaluate = commands.add_parser("eval", help="evaluate retrieval").add_subparsers(required=True, metavar="WHAT")
    retrieval = evaluate.add_parser("retrieval", help="hit@k and MRR@10 of retrieval on a question set")
    retrieval.add_argument("--corpus", type=Path, required=True)
    retrieval.add_argument("--questions", type=Path, required=True)
    retrieval.add_argument("--details", type=Path, default=Path("eval-retrieval.jsonl"),
                           help="per-question results (default: eval-retrieval.jsonl)")
    _strategy_options(retrieval)
    retrieval.set_defaults(run=_eval_retrieval)
    return parser


def _strategy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--splitter", choices=SPLITTERS, help="chunking strategy (default: settings)")
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--chunk-overlap", type=int)


def _strategy(args, components):
    return components.strategy(splitter=args.splitter, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)


def _ask(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints.answer_text import answer_json, format_answer

    if not args.question.strip():
        raise InvalidInput("the question is empty")
    with bootstrap() as components:
        answer = components.answerer.answer(args.question)
    print(json.dumps(answer_json(answer), indent=2) if args.json else format_answer(answer_json(answer)))
    return 0


def _ingest(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.sources.locations import load_locations

    with bootstrap() as components:
        strategy = _strategy(args, components)
        documents = load_locations(args.paths, open_location=components.location, source=args.source,
                                   base_url=args.base_url)
        result = index_documents(
            documents, store=components.store, embeddings=components.embeddings, strategy=strategy,
            source=args.source, prune=not args.no_prune, answers_source=components.settings.answers_source,
        )
    print(json.dumps(result.to_dict()))
    return 0


def _eval_retrieval(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.evaluation.retrieval_eval import evaluate

    if not args.corpus.is_dir():
        raise InvalidInput(f"--corpus {args.corpus} is not a folder")
    if not args.questions.is_file():
        raise InvalidInput(f"--questions {args.questions} is not a file")
    with bootstrap() as components:
        strategy = _strategy(args, components)
        store = components.vector_store(
            f"{components.settings.collection}_eval_{_identifier(components.embeddings.name)}")
        try:
            summary = evaluate(corpus=args.corpus, questions_file=args.questions, store=store,
                               embeddings=components.embeddings, retriever=components.retriever_for(store),
                               strategy=strategy, details_path=args.details)
        finally:
            store.close()
    print(f"per-question results: {args.details}")
    print(json.dumps(summary))
    return 0


def _identifier(name: str) -> str:
    """A model name as part of a collection name: one evaluation collection per embedding model, so that models
    can be compared without re-embedding and a collection never mixes dimensions."""
    return re.sub(r"\W+", "_", name).strip("_").lower()


def _demo(args) -> int:
    from askflow.dev.demo import run_demo

    return run_demo(question=args.question, wait=not args.no_wait)


if __name__ == "__main__":
    sys.exit(main())
