"""Extractive answers a person can read: only matching sources, whole sentences, and follow-ups answered from what
they add."""

from __future__ import annotations

import re

from askflow.domain.model import Source
from askflow.service_layer.extractive import NOTHING_FOUND, QUOTE_CHARS, extractive_answer

XCOMS = Source(n=1, title="XComs", url="https://docs/xcoms", doc_id="docs:xcoms.rst", excerpt=(
    'XComs (short for "cross-communications") are a mechanism that let tasks talk to each other, as by default\n'
    "tasks are entirely isolated and may be running on entirely different machines.\n\n"
    "An XCom is identified by a key, as well as the task_id and dag_id it came from. Tasks pull an XCom with\n"
    ":meth:`~airflow.models.taskinstance.TaskInstance.xcom_pull`, and many operators push their return value\n"
    "automatically.\n\n"
    "    value = task_instance.xcom_pull(task_ids='pushing_task')\n"))
POOLS = Source(n=2, title="Pools", url="https://docs/pools", doc_id="docs:pools.rst", excerpt=(
    "Pools limit how many tasks run at once on a resource. " * 3 + "A pool has slots."))
LONG = Source(n=3, title="Executors", url="https://docs/executors", doc_id="docs:executors.rst",
              excerpt="The executor decides where tasks run and " + "it can run tasks remotely and " * 40 + "so on.")


def _quotes(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block.startswith("> ")]


def test_only_sources_that_match_are_listed_and_numbered_from_one():
    text, sources = extractive_answer("How do tasks pull an XCom value?", [POOLS.model_copy(update={"n": 1}),
                                                                            XCOMS.model_copy(update={"n": 2})])
    assert [s.doc_id for s in sources] == ["docs:pools.rst", "docs:xcoms.rst"]  # both say "tasks"
    text, sources = extractive_answer("How is an XCom identified?", [POOLS, XCOMS])
    assert [(s.n, s.doc_id) for s in sources] == [(1, "docs:xcoms.rst")]
    assert re.findall(r"\[(\d+)\]", text) == ["1"]
    text, sources = extractive_answer("Kubernetes pod templates?", [POOLS, XCOMS])
    assert sources == [] and NOTHING_FOUND in text


def test_quotes_are_whole_sentences_on_one_line_without_markup():
    text, _ = extractive_answer("How do tasks pull an XCom value?", [XCOMS])
    (quote,) = _quotes(text)
    body = quote.removeprefix("> ").removesuffix(" [1]")
    assert "\n" not in body and body.endswith(".") and body[0].isupper()
    assert ":meth:" not in body and "TaskInstance.xcom_pull" in body
    assert "task_instance.xcom_pull(task_ids=" not in body  # code blocks are not prose
    text, _ = extractive_answer("Where do tasks run remotely?", [LONG])
    (quote,) = _quotes(text)
    assert len(quote) <= QUOTE_CHARS + 20 and quote.endswith("… [1]")
    assert not re.search(r"\w…", quote)  # cut between words


def test_a_chunk_that_begins_mid_sentence_is_not_quoted_from_its_middle():
    cut = Source(n=1, title="Feedback", url="u", excerpt=(
        "removes the stored answers that cited it. Without a model, grading of answers is heuristic."))
    text, _ = extractive_answer("How are answers graded without a model?", [cut])
    assert _quotes(text) == ["> Without a model, grading of answers is heuristic. [1]"]


def test_a_follow_up_is_answered_from_what_it_adds():
    first, _ = extractive_answer("How is an XCom identified?", [XCOMS, POOLS])
    follow_up, sources = extractive_answer("And how do operators push one?", [XCOMS, POOLS],
                                           [("How is an XCom identified?", first)])
    assert follow_up != first
    (quote,) = _quotes(follow_up)
    assert "push" in quote and [s.doc_id for s in sources] == ["docs:xcoms.rst"]
