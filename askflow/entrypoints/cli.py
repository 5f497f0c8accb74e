"""``askflow``: ask, ingest, fine-tune, demo, evaluate and see what people ask, from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

from askflow.config import SPLITTERS
from askflow.domain.audiences import Viewer, audience_names
from askflow.domain.clock import utcnow
from askflow.domain.errors import AskflowError, InvalidInput


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
    except Exception as error:
        problem = _setup_problem(error)
        if problem is None:
            raise
        print(f"askflow: {problem}", file=sys.stderr)
        return 2


def _setup_problem(error: BaseException) -> str | None:
    """What is wrong with the setup, and what to set, when ``error`` (or what caused it) says so: no Google
    credentials, a Google Cloud call that failed, a database that cannot be reached or has no such table. ``None``
    for any other error: a bug, which keeps its traceback. Only the libraries already loaded are looked at (an
    error of a library comes from a loaded one)."""
    auth = sys.modules.get("google.auth.exceptions")
    google_api = sys.modules.get("google.api_core.exceptions")
    psycopg = sys.modules.get("psycopg")
    demo = "a running `askflow demo` prints the exports that reach it"
    while error is not None:
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if auth is not None and isinstance(error, auth.DefaultCredentialsError):
            return (f"no Google credentials for Firestore, Pub/Sub or Cloud Storage: set FIRESTORE_EMULATOR_HOST and "
                    f"PUBSUB_EMULATOR_HOST to emulators ({demo}), or, on Google Cloud, run `gcloud auth "
                    "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file")
        if google_api is not None and isinstance(error, google_api.GoogleAPIError):
            return (f"a Google Cloud call failed ({said}): check ASKFLOW_PROJECT_ID and what the credentials may do, "
                    f"or set FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST to emulators ({demo})")
        if psycopg is not None and isinstance(error, psycopg.errors.UndefinedTable):
            return (f"the database has no such table ({error.diag.message_primary or said}): index documents into "
                    "ASKFLOW_COLLECTION first (`askflow ingest PATH`), or set ASKFLOW_COLLECTION and "
                    f"ASKFLOW_DATABASE_URL to an indexed collection ({demo})")
        if psycopg is not None and isinstance(error, psycopg.OperationalError):
            return (f"cannot reach the database ({said}): set ASKFLOW_DATABASE_URL to a running PostgreSQL ({demo}), "
                    "or unset it for the embedded server under ASKFLOW_DATA_DIR")
        error = error.__cause__
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="askflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a question with cited sources")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the full answer record as JSON")
    ask.add_argument("--fresh", action="store_true", help="answer anew even when a verified earlier answer matches")
    ask.add_argument("--audience", action="append", default=[], metavar="NAME",
                     help="answer from what this audience may read too (repeatable; public always)")
    ask.set_defaults(run=_ask)

    ingest = commands.add_parser("ingest", help="index .md/.mdx/.rst/.html from files, folders, GCS or git")
    ingest.add_argument("paths", nargs="+", metavar="LOCATION",
                        help="a file or folder, gs://BUCKET/PREFIX, or git+URL[@REF][#subdirectory=DIR]")
    ingest.add_argument("--source", default="docs", help="source name; pruning stays within it (default: docs)")
    ingest.add_argument("--base-url", help="URL prefix for the documents' links (default: file URLs)")
    _strategy_options(ingest)
    ingest.add_argument("--no-prune", action="store_true", help="keep stored documents missing from the locations")
    ingest.add_argument("--prune-all", action="store_true",
                        help="let locations with no documents delete every stored document of the source "
                             "(refused otherwise)")
    ingest.add_argument("--audience", action="append", default=None, metavar="NAME",
                        help="who may read these documents (repeatable; default: as stored, public when new)")
    ingest.set_defaults(run=_ingest)

    relabel = commands.add_parser("relabel", help="change who may read stored documents, without embedding them")
    relabel.add_argument("prefix", metavar="DOC_ID_PREFIX", help="a source (docs:) or part of one (docs:guides/)")
    relabel.add_argument("--audience", action="append", required=True, metavar="NAME",
                         help="who may read them (repeatable)")
    relabel.set_defaults(run=_relabel)

    finetune = commands.add_parser(
        "finetune", help="fine-tune the embedding model on the corpus; promote it only if it retrieves better")
    finetune.add_argument("--corpus", metavar="LOCATION",
                          help="the documentation: a folder, gs://BUCKET/PREFIX or git+URL[@REF][#subdirectory=DIR]")
    finetune.add_argument("--source", default="docs", help="the source name it is ingested under (default: docs)")
    finetune.add_argument("--questions", type=Path, help="question set that judges (default: settings)")
    finetune.add_argument("--steps", type=int, help="training steps (default: settings)")
    finetune.add_argument("--batch-size", type=int)
    finetune.add_argument("--learning-rate", type=float)
    finetune.add_argument("--metric", help="what must improve: hit@1, hit@3, hit@5, hit@10 or mrr@10")
    finetune.add_argument("--margin", type=float, help="by how much at least (default: settings)")
    finetune.add_argument("--answers", action="store_true", help="also learn from good answers (reads Firestore)")
    finetune.add_argument("--synthetic", type=int, metavar="N",
                          help="the cheap model writes a question for N passages (default: settings; needs a model)")
    finetune.add_argument("--rollback", action="store_true", help="serve the model served before the last promotion")
    finetune.set_defaults(run=_finetune)

    demo = commands.add_parser("demo", help="run the whole system locally on askflow's own docs (or yours: --docs), "
                                            "ask, keep running")
    demo.add_argument("--docs", type=Path, metavar="FOLDER",
                      help="index this folder of .md/.mdx/.rst/.html files instead of askflow's own docs")
    demo.add_argument("--question", help="the sample question (default: one about the indexed docs)")
    demo.add_argument("--no-wait", action="store_true", help="stop after printing the answer")
    demo.add_argument("--airflow", action="store_true",
                      help="run Airflow itself (airflow standalone, with its UI) instead of dag.test() runs")
    demo.set_defaults(run=_demo)

    insights = commands.add_parser("insights", help="what people ask: clusters of questions and coverage gaps")
    insights.add_argument("--period", help="how far back from the end: 7d, 24h, 2w (default: settings, 7d)")
    insights.add_argument("--end", help="the period's end, ISO 8601 (default: now, to the hour)")
    insights.add_argument("--min-cluster-size", type=int, help="default: settings")
    insights.add_argument("--format", choices=["table", "json", "csv"], default="table")
    insights.add_argument("--file-issues", action="store_true",
                          help="file (or update) one issue per coverage gap in ASKFLOW_INSIGHTS_DOCS_REPO")
    insights.set_defaults(run=_insights)

    stats = commands.add_parser("stats", help="questions, latency, cost, cache hits, ratings and failures")
    stats.add_argument("--period", default="7d", help="how far back from now: 7d, 24h, 2w (default: 7d)")
    stats.add_argument("--format", choices=["table", "json"], default="table")
    stats.set_defaults(run=_stats)

    lineage = commands.add_parser("lineage", help="where an answer came from (sources, versions, ingestion runs, "
                                  "still current?), or which answers drew on a document (--document)")
    lineage.add_argument("request_id", nargs="?", metavar="REQUEST_ID")
    lineage.add_argument("--document", metavar="DOC_ID", help="a document id (SOURCE:PATH): the answers that cited it")
    lineage.add_argument("--format", choices=["table", "json"], default="table")
    lineage.set_defaults(run=_lineage)

    escalations = commands.add_parser("escalations", help="take the answers reviewers marked on the escalation issues "
                                      "(ASKFLOW_ESCALATION_GITHUB_REPO) and close them: run it from a schedule")
    escalations.set_defaults(run=_escalations)

    delete = commands.add_parser("delete-request", help="(admin) delete one request and everything derived from it: "
                                 "its stored answer, its verified-answer cache entry and learned record, its feed item")
    delete.add_argument("request_id", metavar="REQUEST_ID")
    delete.set_defaults(run=_delete_request)

    evaluate = commands.add_parser("eval", help="evaluate retrieval").add_subparsers(required=True, metavar="WHAT")
    retrieval = evaluate.add_parser("retrieval", help="hit@k and MRR@10 of retrieval on a question set")
    retrieval.add_argument("--corpus", type=Path, required=True)
    retrieval.add_argument("--questions", type=Path, required=True)
    retrieval.add_argument("--details", type=Path, default=Path("eval-retrieval.jsonl"),
                           help="per-question results (default: eval-retrieval.jsonl)")
    _strategy_options(retrieval)
    retrieval.add_argument("--floor", action="append", default=[], metavar="METRIC=VALUE",
                           help="fail (exit 1) when METRIC (hit@1, hit@3, hit@5, hit@10, mrr@10) is below VALUE; "
                                "repeatable: a regression gate")
    retrieval.add_argument("--rerank", action="store_true",
                           help="reorder the fused documents with the configured reranker (ASKFLOW_RERANKER)")
    retrieval.add_argument("--contextual", action="store_true",
                           help="give the chunks their contexts by the cheap model first (ASKFLOW_CONTEXTUAL_*), in "
                                "a collection of their own")
    retrieval.add_argument("--llm", action="store_true",
                           help="retrieve as the answer path does: the cheap model rewords each question "
                                "(ASKFLOW_REWORDINGS), each rewording searched by keywords and fused")
    retrieval.set_defaults(run=_eval_retrieval)

    learning = evaluate.add_parser("feedback", help="one round of the learning loop: retrieval before and after, "
                                                    "and the verified-answer cache")
    learning.add_argument("--corpus", type=Path, required=True)
    learning.add_argument("--feedback", type=Path, required=True,
                          help="questions asked, answered and rated first (JSONL like --questions; may be empty)")
    learning.add_argument("--questions", type=Path, required=True, help="questions that judge (JSONL: question, gold)")
    learning.add_argument("--details", type=Path, default=Path("eval-feedback.jsonl"),
                          help="per-question retrieval results after the feedback (default: eval-feedback.jsonl)")
    _strategy_options(learning)
    learning.set_defaults(run=_eval_feedback)
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
        answer = components.answerer.answer(args.question, fresh=args.fresh, viewer=_viewer(args.audience))
    print(json.dumps(answer_json(answer), indent=2) if args.json else format_answer(answer_json(answer)))
    return 0


def _ingest(args) -> int:
    from askflow.bootstrap import bootstrap

    audiences = _audiences(args.audience) if args.audience else None  # a bad name fails before anything loads
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.provenance import cli_run
    from askflow.ingest.sources.locations import load_locations

    with bootstrap() as components:
        strategy = _strategy(args, components)
        documents = load_locations(args.paths, open_location=components.location, source=args.source,
                                   base_url=args.base_url)
        result = index_documents(
            documents, store=components.store, embeddings=components.embeddings, strategy=strategy,
            source=args.source, prune=not args.no_prune, answers_source=components.settings.answers_source,
            allow_empty=args.prune_all, audiences=audiences,
            max_unavailable_share=components.settings.web_max_unavailable_share, run=cli_run(),
            requests=lambda: _answers_store(components),
        )
    print(json.dumps(result.to_dict()))
    return 0


def _answers_store(components):
    """The request store, whose answers a relabelled document's new readers reach; ``None`` (said on stderr) where
    none is reachable (no Google credentials, no emulator): the documents are relabelled, their earlier answers are
    not until ``askflow relabel`` runs where it is."""
    try:
        return components.requests
    except Exception as error:  # google-auth's DefaultCredentialsError, a project not set: nothing to relabel there
        print(f"askflow: earlier answers not relabelled (no request store: {str(error).splitlines()[0][:200]}); "
              "run `askflow relabel` again where Firestore is reachable", file=sys.stderr)
        return None


def _audiences(names: list[str]) -> list[str]:
    try:
        return audience_names(names)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def _viewer(names: list[str]) -> Viewer:
    return Viewer.of(_audiences(names))


def _relabel(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.ingest.labels import relabel_location

    if ":" not in args.prefix:
        raise InvalidInput(f"prefix {args.prefix!r}: a document id prefix, as SOURCE: or SOURCE:PATH")
    with bootstrap() as components:
        components.store.ensure_collection(components.embeddings.dimension)
        result = relabel_location(components.store, prefix=args.prefix, audiences=_audiences(args.audience),
                                  answers_source=components.settings.answers_source,
                                  requests=_answers_store(components))
    print(json.dumps(result))
    return 0


def _eval_retrieval(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints.finetune_steps import identifier
    from askflow.evaluation.retrieval_eval import evaluate, load_corpus, load_questions

    if not args.corpus.is_dir():
        raise InvalidInput(f"--corpus {args.corpus} is not a folder")
    if not args.questions.is_file():
        raise InvalidInput(f"--questions {args.questions} is not a file")
    floors = _floors(args.floor)
    with bootstrap() as components:
        if args.rerank and components.settings.reranker == "none":
            raise InvalidInput("--rerank needs a reranker: set ASKFLOW_RERANKER to cohere or vertex")
        if args.contextual and not components.settings.llm_configured:
            raise InvalidInput("--contextual needs a chat model to write the contexts: set OPENAI_API_KEY or "
                               "OPENAI_BASE_URL")
        if args.llm and not components.settings.llm_configured:
            raise InvalidInput("--llm needs the chat model that rewords the questions: set ASKFLOW_OPENAI_BASE_URL "
                               "(or OPENAI_API_KEY) to its endpoint and ASKFLOW_CHEAP_MODEL to the model")
        if args.llm and components.settings.rewordings == 0:
            raise InvalidInput("--llm measures the rewordings, and ASKFLOW_REWORDINGS is 0: set it to 1 or more")
        strategy = _strategy(args, components)
        collection = f"{components.settings.collection}_eval_{identifier(components.embeddings.name)}"
        collection += "_contextual" if args.contextual else ""
        store = components.vector_store(collection)
        try:
            retriever = components.retriever_for(store, rerank=args.rerank)
            summary = evaluate(documents=load_corpus(args.corpus), questions=load_questions(args.questions),
                               store=store, embeddings=components.embeddings, retriever=retriever, strategy=strategy,
                               details_path=args.details, progress=_Progress(),
                               contextualizer=_contextualizer(components, store, collection) if args.contextual
                               else None,
                               answerer=_rewording_answerer(components, retriever) if args.llm else None,
                               prices=components.prices)
        finally:
            store.close()
    print(f"per-question results: {args.details}")
    print(json.dumps(summary))
    below = [f"{metric} {summary[metric]} < {floor}" for metric, floor in floors if summary[metric] < floor]
    if below:
        print(f"askflow: retrieval below its floor: {'; '.join(below)}", file=sys.stderr)
        return 1
    return 0


def _rewording_answerer(components, retriever):
    """The answer path's retrieval over ``retriever``: the cheap model rewords each question; no answer is written,
    so no answer model."""
    from askflow.service_layer.answering import Answerer

    s = components.settings
    return Answerer(retriever=retriever, cheap_model=components.chat_model(s.cheap_model), strong_model=None,
                    rewordings=s.rewordings, sources=s.sources_per_answer, subject=s.docs_subject)


def _contextualizer(components, store, collection: str):
    from askflow.ingest.contextual import Contextualizer

    s = components.settings
    return Contextualizer.configured(s, store=store, embeddings=components.embeddings,
                                     model=components.chat_model(s.cheap_model), prices=components.prices,
                                     client=components.openai_client, retrying=components.retrying,
                                     collection=collection)


def _floors(specs: list[str]) -> list[tuple[str, float]]:
    from askflow.evaluation.retrieval_eval import CUTOFFS

    known = [*(f"hit@{k}" for k in CUTOFFS), "mrr@10"]
    floors = []
    for spec in specs:
        metric, _, value = spec.partition("=")
        try:
            floor = float(value)
        except ValueError:
            floor = None
        if metric not in known or floor is None:
            raise InvalidInput(f"--floor {spec!r}: expected METRIC=VALUE with METRIC one of {', '.join(known)}")
        floors.append((metric, floor))
    return floors


def _eval_feedback(args) -> int:
    from askflow.adapters.memory import InMemoryEvaluationRuns, InMemoryRequestStore
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints.finetune_steps import identifier
    from askflow.evaluation.feedback_eval import evaluate_feedback
    from askflow.evaluation.retrieval_eval import load_corpus, load_questions

    if not args.corpus.is_dir():
        raise InvalidInput(f"--corpus {args.corpus} is not a folder")
    for option, path in (("--feedback", args.feedback), ("--questions", args.questions)):
        if not path.is_file():
            raise InvalidInput(f"{option} {path} is not a file")
    feedback, questions = load_questions(args.feedback, allow_empty=True), load_questions(args.questions)
    with bootstrap() as components:
        strategy = _strategy(args, components)
        embeddings = components.embeddings
        suffix = f"_eval_{identifier(embeddings.name)}"
        collection = f"{components.settings.collection}{suffix}"
        store = components.vector_store(collection)
        signals = components.learned_signals(f"{components.settings.learned_collection}{suffix}")
        try:
            summary = evaluate_feedback(
                documents=load_corpus(args.corpus), feedback=feedback, questions=questions, store=store,
                embeddings=embeddings, signals=signals,
                retriever=components.retriever_for(store, embeddings, signals=signals, collection=collection),
                answerer=components.answerer_for(store, embeddings, collection=collection, signals=signals),
                grader=components.grader, strategy=strategy, settings=components.settings, collection=collection,
                requests=InMemoryRequestStore(), runs=InMemoryEvaluationRuns(), details_path=args.details)
        finally:
            signals.close()
            store.close()
    print(f"per-question results: {args.details}")
    print(json.dumps(summary))
    return 0


def _finetune(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.entrypoints import finetune_steps as steps
    from askflow.service_layer.finetuning import TrainingParams

    with bootstrap() as components:
        if args.rollback:
            print(json.dumps(steps.rollback(components)))
            return 0
        s = components.settings
        questions = steps.question_set(args.questions or s.finetune_questions)
        if not args.corpus:
            raise InvalidInput("finetune needs --corpus: the documentation to learn from")
        params = TrainingParams(steps=args.steps or s.finetune_steps,
                                batch_size=args.batch_size or s.finetune_batch_size,
                                learning_rate=args.learning_rate or s.finetune_learning_rate)
        started = utcnow()
        pairs = steps.build_pairs(components, location=args.corpus, source=args.source, answers=args.answers,
                                  synthetic=s.finetune_synthetic_passages if args.synthetic is None else args.synthetic)
        print(f"{sum(pairs['by_kind'].values())} training pairs {pairs['by_kind']}"
              f"{' (reused)' if pairs['reused'] else ''}", file=sys.stderr, flush=True)
        trained = steps.train(components, pairs, params, progress=True)
        figures = steps.compare(components, location=args.corpus, questions=str(questions),
                                challenger=trained["model"]["name"])
        run = steps.decide_and_promote(components, pairs=pairs, trained=trained, figures=figures,
                                       metric=args.metric or s.finetune_metric,
                                       margin=s.finetune_margin if args.margin is None else args.margin,
                                       started_at=started)
        record = steps.workdir(components) / "runs" / f"{run.run_id}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(run.model_dump_json(indent=2))
    print(f"{run.decision}\nthe model: {run.challenger.path}\nthe run: {record}", file=sys.stderr)
    print(run.model_dump_json())
    return 0


def _insights(args) -> int:
    import datetime as dt

    from askflow.bootstrap import bootstrap
    from askflow.entrypoints import insights_steps
    from askflow.insights.render import csv_text, table_text

    try:
        end = dt.datetime.fromisoformat(args.end) if args.end else None
    except ValueError:
        raise InvalidInput(f"--end {args.end!r}: an ISO 8601 date or time, like 2026-11-23T00:00") from None
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    if args.min_cluster_size is not None and args.min_cluster_size < 2:
        raise InvalidInput("--min-cluster-size: at least 2")
    with bootstrap() as components:
        report = insights_steps.build(components, period=args.period or components.settings.insights_period,
                                      end=end, min_cluster_size=args.min_cluster_size, progress=_Progress())
        filed = insights_steps.file_gaps(components, report.report_id) if args.file_issues else None
    if args.format == "json":
        print(report.model_dump_json())
    elif args.format == "csv":
        print(csv_text(report), end="")
    else:
        print(table_text(report))
    print(f"report {report.report_id}: {report.files.get('html', '')}"
          + (f"; gaps filed: {filed}" if filed is not None else ""), file=sys.stderr)
    return 0


def _lineage(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.service_layer.lineage import document_lineage, request_lineage

    if (args.request_id is None) == (args.document is None):
        raise InvalidInput("name a request (askflow lineage REQUEST_ID) or a document (--document DOC_ID), not both")
    with bootstrap() as components:
        if args.document is not None:
            report = document_lineage(args.document, requests=components.requests, store=components.store)
        else:
            report = request_lineage(args.request_id, requests=components.requests, store=components.store)
    if args.format == "json":
        print(report.model_dump_json(indent=2))
    else:
        print(_document_table(report) if args.document is not None else _request_table(report))
    return 0


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "—"


#: characters a terminal acts on or that reorder what it shows (bidirectional overrides and isolates)
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(value) -> str:
    """Text as a terminal may print it: a question is anyone's (``POST /requests`` takes ESC and newlines), so C0 and
    C1 controls and bidirectional controls are shown as escapes (ESC as ``\\x1b``) and a newline as ``⏎``: no escape
    sequence reaches the admin's terminal, no line of the table is forged."""
    text = "" if value is None else str(value)
    return "".join("⏎" if c == "\n" else f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F
                   else f"\\u{ord(c):04x}" if c in _BIDI_CONTROLS else c for c in text)


def _request_table(report) -> str:
    lines = [f"request {_shown(report.request_id)} ({_shown(report.status)}, {_shown(report.mode or 'no answer')}): "
             f"{_shown(report.question)}",
             f"  answered {_when(report.answered_at)}" + (", verified by " + _shown(report.verified_by)
                                                          if report.verified and report.verified_by else "")]
    if report.origin:
        lines.append(f"  served from the cache {_when(report.served_at)}: the verified answer of request "
                     f"{_shown(report.origin)}, with its sources")
    if report.team_answer is not None:
        team = report.team_answer
        lines.append(f"  the team's answer (on request {_shown(team.request_id)}) by {_shown(team.by)}, marked by "
                     f"{_shown(team.marked_by)} {_when(team.at)}: it rests on no source; askflow's attempt drew on "
                     "those below")
    if not report.recorded:
        lines.append("  no lineage recorded (answered before lineage was kept, or not answered)")
    for source in report.sources:
        lines.append(f"  [{source.n}] {_shown(source.doc_id)} — {_shown(source.title)}"
                     f"{'' if source.cited else ' (given, not cited)'}")
        lines.append(f"      {_shown(source.url)}")
        lines.append(f"      from {_shown(source.location or '—')}, version {_shown(source.version or '—')}")
        lines.append(f"      ingested {_when(source.ingested_at)} by run {_shown(source.run or '—')}")
        if source.state == "no longer current" and source.now is not None:
            lines.append(f"      no longer current: now version {_shown(source.now.version or '—')}, ingested "
                         f"{_when(source.now.ingested_at)} by run {_shown(source.now.run or '—')}")
        elif source.state == "gone":
            lines.append("      gone: no longer stored (pruned)")
        else:
            lines.append(f"      {_shown(source.state)}")
    return "\n".join(lines)


def _document_table(report) -> str:
    now = report.now
    lines = [f"document {_shown(report.doc_id)}: " + (
        f"stored version {_shown(now.version or '—')} from {_shown(now.location or '—')}, "
        f"ingested {_when(now.ingested_at)} by run {_shown(now.run or '—')}"
        if now is not None else "not stored (pruned, or never indexed)")]
    if not report.requests:
        lines.append("  no answer drew on it")
    for item in report.requests:
        verdict = ("verified answer voided by a change" if item.voided else "verified" if item.verified else
                   "not verified")
        how = "cited" if item.cited else "given, not cited"
        cached = f", cached from {_shown(item.origin)}" if item.origin else ""
        lines.append(f"  {_shown(item.request_id)} {_when(item.created_at)} ({_shown(item.mode or '—')}{cached}): "
                     f"{_shown(item.question)}")
        lines.append(f"      {how}, version {_shown(item.version or '—')} (run {_shown(item.run or '—')}): "
                     f"{_shown(item.state)}; {verdict}")
    return "\n".join(lines)


def _escalations(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.domain.errors import ConfigurationError
    from askflow.service_layer.escalation import take_marked_answers

    with bootstrap() as components:
        if not components.settings.escalation_github_repo:
            raise ConfigurationError("taking marked answers needs ASKFLOW_ESCALATION_GITHUB_REPO (owner/name); "
                                     "Slack's come as reactions")
        taken = take_marked_answers(requests=components.requests, escalations=components.escalations,
                                    settings=components.settings)
    print(f"{taken} escalation{'' if taken == 1 else 's'} answered")
    return 0


def _delete_request(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.service_layer.lineage import delete_request

    with bootstrap() as components, contextlib.ExitStack() as opened:
        serving, others = components.serving().collection, {}

        def store_for(collection: str):
            """The collection a request was answered from, when serving moved on (a fine-tuning promotion)."""
            if collection == serving:
                return None
            if collection not in others:
                others[collection] = components.vector_store(collection)
                opened.callback(others[collection].close)
            return others[collection]

        deletion = delete_request(args.request_id, requests=components.requests, stores=[components.store],
                                  signals=components.signals, answers_source=components.settings.answers_source,
                                  store_for=store_for)
    if deletion.nothing_left:
        print(f"nothing left of request {args.request_id}: deleted before, or never stored")
        return 0
    chunks, copies = deletion.stored_answer_chunks, ", ".join(deletion.cached_copies)
    print(f"deleted request {args.request_id}: "
          f"request {'deleted' if deletion.request else 'already gone'}; "
          f"stored answer {f'deleted ({chunks} chunks)' if chunks else 'none'}; "
          f"learned record {'deleted' if deletion.learned_records else 'none'}"
          f"{' (the verified answer the cache served)' if deletion.cache_entry else ''}; "
          f"feed item {'removed' if deletion.feed_item else 'none'}; "
          f"cached copies {f'deleted ({copies})' if copies else 'none'}")
    return 0


def _stats(args) -> int:
    from askflow.bootstrap import bootstrap
    from askflow.ingest.contextual import ContextRunLog
    from askflow.insights.model import parse_period
    from askflow.service_layer.stats import usage_stats

    period = parse_period(args.period)
    end = utcnow()
    with bootstrap() as components:
        stats = usage_stats(components.requests.created_between(end - period, end), start=end - period, end=end,
                            progress=_Progress(),
                            context_runs=ContextRunLog.configured(components.settings).between(end - period, end))
    if args.format == "json":
        print(stats.model_dump_json())
        return 0

    def money(value):
        return "—" if value is None else f"${value:.4f}"

    def share(value):
        return "—" if value is None else f"{value:.0%}"

    def seconds(value):
        return "—" if value is None else f"{value / 1000:.2f} s"

    print(f"{stats.questions} questions, {stats.period_start:%Y-%m-%d %H:%M} to {stats.period_end:%Y-%m-%d %H:%M}\n"
          f"  answered {stats.answered}, failed {stats.failed}, unfinished {stats.unfinished}\n"
          f"  latency p50 {seconds(stats.latency_p50_ms)}, p95 {seconds(stats.latency_p95_ms)}\n"
          f"  cost {money(stats.cost_usd)}, per answer {money(stats.cost_per_answer_usd)}\n"
          f"  served from the cache {stats.cache_hits} ({share(stats.cache_hit_share)}), "
          f"rated helpful {share(stats.rated_up_share)} of {stats.rated} rated")
    print("per day:\n" + "\n".join(f"  {d.day}  {d.questions:>6} questions  {money(d.cost_usd)}" for d in stats.days))
    contextual = stats.contextual
    if contextual.runs:
        print(f"contextual chunks (runs: {contextual.runs}): {contextual.contextualized} given a context, "
              f"{contextual.calls} calls, {money(contextual.cost_usd)}"
              + (f"; {contextual.left} left past a run's cap" if contextual.left else ""))
    if stats.failures_by_reason:
        print("failures:\n" + "\n".join(f"  {n:>6}  {reason}" for reason, n in stats.failures_by_reason.items()))
    return 0


class _Progress:
    """Progress of a long run on stderr, a line at a time (a terminal, a pipe and a log read the same): a stage's
    first report, then each tenth of its total, and its end (``done == total``); with no total known (0: a scan),
    every report (its caller reports every so many)."""

    def __init__(self) -> None:
        self._stage: str | None = None
        self._told = (0, 0)  # (done, total) of the stage's last line

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == self._stage and ((done, total) == self._told or (
                total and done < total and done - self._told[0] < total / 10)):
            return
        print(f"{stage}: {done}/{total}" if total else f"{stage}: {done}", file=sys.stderr, flush=True)
        self._stage, self._told = stage, (done, total)


def _demo(args) -> int:
    from askflow.dev.demo import run_demo

    return run_demo(question=args.question, docs=args.docs, wait=not args.no_wait, airflow=args.airflow,
                    progress=_Progress())


if __name__ == "__main__":
    sys.exit(main())
