"""Source links that land on the section and the passage: section ids as Sphinx and GitHub/MkDocs make them, and a
text fragment from the passage's first plain words."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from askflow.service_layer.links import markdown_id, passage_link, passage_start, rst_id


@pytest.mark.parametrize(("heading", "expected"), [
    ("Custom XCom Backends", "custom-xcom-backends"),
    ("What's new in 2.0?", "what-s-new-in-2-0"),  # docutils: every run of other characters is one hyphen
    ("2. Install the provider", "install-the-provider"),  # an id does not start with a digit
    ("Café & Co.", "cafe-co"),
])
def test_rst_section_ids_are_docutils_ids(heading, expected):
    assert rst_id(heading) == expected


@pytest.mark.parametrize(("heading", "expected"), [
    ("Run a DAG: step 1", "run-a-dag-step-1"),
    ("What's new in 2.0?", "whats-new-in-20"),  # GitHub drops punctuation instead
    ("The `catchup` setting", "the-catchup-setting"),
])
def test_markdown_section_ids_are_github_slugs(heading, expected):
    assert markdown_id(heading) == expected


def test_a_docs_link_names_the_innermost_section_and_the_passage():
    link = passage_link("https://docs.example.org/xcoms.rst", doc_id="docs:xcoms.rst", kind="docs",
                        section="Concepts > Custom XCom Backends",
                        excerpt=".. note::\n\n   ``xcom_pull`` is lazy.\nA custom backend stores the values elsewhere, "
                                "for example in object storage. It is set in the config.")
    page, _, fragment = link.partition("#")
    anchor, _, text = fragment.partition(":~:text=")
    assert page == "https://docs.example.org/xcoms.rst" and anchor == "custom-xcom-backends"
    assert unquote(text) == "A custom backend stores the values elsewhere, for"  # its first plain words
    assert "-" not in text and "," not in text  # text-directive syntax, percent-encoded


def test_other_sources_and_links_with_a_fragment_stay_as_they_are():
    slack = "https://acme.slack.com/archives/C1/p1700000000000100"
    assert passage_link(slack, doc_id="slack:C1", kind="slack", section="", excerpt="we fixed it by x y z") == slack
    git = "file:///repo@abc#docs/xcoms.rst"
    assert passage_link(git, doc_id="docs:xcoms.rst", kind="docs", section="A", excerpt="one two three four") == git
    assert passage_start("``code`` only\n:ref:`x`") is None
    assert passage_link("https://d/x.md", doc_id="docs:x.md", kind="docs", section="", excerpt="`a`") == "https://d/x.md"
