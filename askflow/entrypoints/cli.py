"""``askflow``: ask, ingest, demo and evaluate from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path

from askflow.domain.errors import AskflowError

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
    parser.add_argument("--splitter", choices=("section", "recursive"), help="chunking strategy (default: settings)")
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--chunk-overlap", type=int)


def _strategy(args, settings):
    from askflow.ingest.chunking import ChunkingStrategy

    try:
        return ChunkingStrategy(
            splitter=args.splitter or settings.splitter,
            chunk_size=args.chunk_size or settings.chunk_size,
            chunk_overlap=args.chunk_overlap if args.chunk_overlap is not None else settings.chunk_overlap,
        )
    except ValueError as error:
        from askflow.domain.errors import InvalidInput

        raise InvalidInput(str(error)) from error


def _ask(args) -> int:
    from askflow.bootstrap import bootstrap

    if not args.question.strip():
        print("askflow: the question is empty", file=sys.stderr)
        return 2
    components = bootstrap()
    answer = components.answerer.answer(args.question)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    else:
        print(format_answer(answer.to_dict()))
    components.close()
    return 0


def _ingest(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.locations import load_locations

    components = bootstrap()
    strategy = _strategy(args, components.settings)
    documents = load_locations(args.paths, source=args.source, base_url=args.base_url)
    result = index_documents(
        documents, store=components.store, embeddings=components.embeddings, strategy=strategy,
        source=args.source, prune=not args.no_prune, answers_source=components.settings.answers_source,
    )
    print(json.dumps(result.to_dict()))
    components.close()
    return 0


def _eval_retrieval(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.evaluation.retrieval_eval import evaluate

    if not args.corpus.is_dir():
        print(f"askflow: --corpus {args.corpus} is not a folder", file=sys.stderr)
        return 2
    if not args.questions.is_file():
        print(f"askflow: --questions {args.questions} is not a file", file=sys.stderr)
        return 2
    components = bootstrap()
    strategy = _strategy(args, components.settings)
    summary = evaluate(
        corpus=args.corpus, questions_file=args.questions, components=components, strategy=strategy,
        collection=f"{components.settings.collection}_eval_{_identifier(components.embeddings.name)}",
        details_path=args.details,
    )
    print(f"per-question results: {args.details}")
    print(json.dumps(summary))
    return 0


def _identifier(name: str) -> str:
    """A model name as part of a collection name: one evaluation collection per embedding model, so that models
    can be compared without re-embedding and a collection never mixes dimensions."""
    return re.sub(r"\W+", "_", name).strip("_").lower()


def _demo(args) -> int:
    from askflow.demo import run_demo

    return run_demo(question=args.question, wait=not args.no_wait)


def format_answer(record: dict) -> str:
    lines = [record.get("answer", ""), "", "Sources:"]
    for source in record.get("sources", []):
        section = f" — {source['section']}" if source.get("section") else ""
        lines.append(f"  [{source['n']}] {source['title']}{section}  {source['url']}")
    if record.get("mode") == "extractive":
        lines += ["", "(extractive mode: no LLM configured)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
