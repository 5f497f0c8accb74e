"""Nothing outside a location's root is read, whatever links or paths in a folder or a git repository say; a git URL
or ref can never become an option of git."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from askflow.adapters.git_documents import GitLocation
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.errors import InvalidInput
from askflow.entrypoints.cli import main
from askflow.ingest.sources.files import load_paths
from askflow.ingest.sources.locations import FolderLocation
from tests.support.git_repo import commit

MARKER = "marker-7f3c9e-outside-the-root"


def open_location(spec: str, cache_dir: Path):
    """A location as the CLI and the DAGs open it."""
    return bootstrap(Settings()).location(spec, cache_dir=cache_dir)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file and a folder next to the ingested tree, both holding the marker."""
    (tmp_path / "outside.txt").write_text(f"# Vault\n\n{MARKER}\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "leak.md").write_text(f"# Leak\n\n{MARKER}\n")
    return tmp_path


@pytest.fixture
def linked_folder(outside) -> Path:
    """``site/docs``: one real page, and links out of it (relative, absolute, to /proc, dangling, a folder) and one
    inside it."""
    docs = outside / "site" / "docs"
    docs.mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\nThe real page.\n")
    (docs / "vault.md").symlink_to("../../outside.txt")
    (docs / "absolute.md").symlink_to(outside / "outside.txt")
    (docs / "environ.md").symlink_to("/proc/self/environ")
    (docs / "dangling.md").symlink_to("../nowhere.md")
    (docs / "more").symlink_to(outside / "secrets", target_is_directory=True)
    (docs / "alias.md").symlink_to("guide.md")
    return docs


def test_a_folder_lists_and_loads_no_symbolic_link(linked_folder, caplog):
    with caplog.at_level(logging.WARNING):
        documents = load_paths([linked_folder], source="docs")
    assert [d.doc_id for d in documents] == ["docs:guide.md"]
    assert not any(MARKER in d.text or "PATH=" in d.text for d in documents)
    assert "6 symbolic links left out" in caplog.text
    assert "absolute.md, alias.md, dangling.md, environ.md, more, ..." in caplog.text

    location = FolderLocation(linked_folder)
    assert location.list() == ["guide.md"]
    assert location.load("guide.md", source="docs", base_url=None).text == "# Guide\n\nThe real page.\n"


@pytest.mark.parametrize(("relative", "message"), [
    ("vault.md", "symbolic link"),
    ("absolute.md", "symbolic link"),
    ("environ.md", "symbolic link"),
    ("more/leak.md", "symbolic link"),
    ("alias.md", "symbolic link"),
    ("../../outside.txt", "not a path inside"),
    ("../../secrets/leak.md", "not a path inside"),
    ("{outside}/outside.txt", "not a path inside"),
])
def test_a_folder_location_refuses_to_load_what_leaves_its_root(linked_folder, outside, relative, message):
    """A batch's relative paths travel between tasks: a path no listing gave is refused, not read."""
    with pytest.raises(InvalidInput, match=message):
        FolderLocation(linked_folder).load(relative.format(outside=outside), source="docs", base_url=None)


def test_only_regular_files_are_read_and_a_fifo_never_blocks(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    os.mkfifo(docs / "pipe.md")
    assert FolderLocation(docs).list() == []
    with pytest.raises(InvalidInput, match="not a regular file"):
        FolderLocation(docs).load("pipe.md", source="docs", base_url=None)
    with pytest.raises(InvalidInput, match="not a regular file"):
        load_paths([docs / "pipe.md"], source="docs")


def test_a_named_file_is_its_own_root_so_the_link_the_user_named_is_followed(linked_folder):
    [document] = load_paths([linked_folder / "vault.md"], source="docs")
    assert document.doc_id == "docs:vault.md" and MARKER in document.text
    assert document.url == (linked_folder.parent.parent / "outside.txt").resolve().as_uri()


@pytest.fixture
def linked_repo(outside) -> Path:
    """A git repository whose commits hold symbolic links out of it: git stores them, the checkout recreates them
    (the checkout lands at cache/<url hash>/<commit>, so four ``..`` from its docs/ reach ``outside``)."""
    repo = outside / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "guide.md").write_text("# Guide\n\nThe real page.\n")
    (repo / "docs" / "vault.md").symlink_to("../../../../outside.txt")
    (repo / "docs" / "absolute.md").symlink_to(outside / "outside.txt")
    (repo / "docs" / "environ.md").symlink_to("/proc/self/environ")
    (repo / "docs" / "more").symlink_to(outside / "secrets", target_is_directory=True)
    (repo / "handbook").symlink_to(outside / "secrets", target_is_directory=True)
    commit(repo, "links out")
    return repo


def test_a_git_checkout_lists_and_loads_no_committed_symbolic_link(linked_repo, outside):
    cache = outside / "cache"
    location = open_location(f"git+{linked_repo.as_uri()}@main#subdirectory=docs", cache)
    assert location.list() == ["guide.md"]
    whole = open_location(f"git+{linked_repo.as_uri()}@main", cache)
    assert whole.list() == ["docs/guide.md"]
    assert MARKER not in whole.load("docs/guide.md", source="docs", base_url=None).text
    assert next(cache.glob("*/*/docs/vault.md")).resolve() == (outside / "outside.txt").resolve()  # it does lead out
    for relative in ("vault.md", "absolute.md", "environ.md", "more/leak.md", "../../../../outside.txt"):
        with pytest.raises(InvalidInput):
            location.load(relative, source="docs", base_url=None)


@pytest.mark.parametrize(("subdirectory", "message"), [
    ("handbook", "no folder 'handbook' in the repository"),  # a committed link to a folder outside
    ("docs/more", "no folder 'docs/more' in the repository"),
    ("../..", "must be a folder inside the repository"),
    ("docs/../..", "must be a folder inside the repository"),
])
def test_a_git_subdirectory_stays_inside_the_checkout(linked_repo, outside, subdirectory, message):
    with pytest.raises(InvalidInput, match=message):
        open_location(f"git+{linked_repo.as_uri()}@main#subdirectory={subdirectory}", outside / "cache").list()


@pytest.mark.parametrize(("spec", "message"), [
    ("git+-oProxyCommand=touch {marker}", "git URL '-oProxyCommand=touch .*' starts with '-'"),
    ("git+--upload-pack=touch pwned;@main", "git URL '--upload-pack=touch pwned;' starts with '-'"),
    ("git+{repo}@--upload-pack=touch pwned;", "git ref '--upload-pack=touch pwned;' starts with '-'"),
])
def test_a_git_url_or_ref_starting_with_a_dash_is_refused(linked_repo, outside, spec, message):
    marker = outside / "ran"
    with pytest.raises(InvalidInput, match=message):
        open_location(spec.format(repo=linked_repo.as_uri(), marker=marker), outside / "cache").list()
    assert not marker.exists()


def test_git_never_reads_the_ref_as_an_option(linked_repo, outside):
    """Past the parser too (the dataclass built directly), ``--`` keeps ``--upload-pack=CMD`` a refspec."""
    marker = outside / "ran"
    location = GitLocation(linked_repo.as_uri(), ref=f"--upload-pack=touch {marker};", cache_dir=outside / "cache")
    with pytest.raises(InvalidInput, match="invalid refspec"):
        location.list()
    assert not marker.exists()


def test_the_cli_refuses_a_dashed_git_url_with_a_message_and_exit_2(outside, capsys):
    marker = outside / "ran"
    assert main(["ingest", f"git+-oProxyCommand=touch {marker}"]) == 2
    assert capsys.readouterr().err.startswith("askflow: git URL '-oProxyCommand=touch ")
    assert not marker.exists()


def test_a_link_planted_where_a_cached_checkout_belongs_is_never_read(linked_repo, outside):
    """A review's case: the cache of pinned checkouts is a folder others may write (it was under /tmp); a link
    planted at a commit's place is not taken for its checkout."""
    import hashlib
    import subprocess

    head = subprocess.run(["git", "-C", str(linked_repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    cache = outside / "cache"
    impostor = outside / "impostor"
    (impostor / ".git").mkdir(parents=True)
    (impostor / "docs").mkdir()
    (impostor / "docs" / "notes.md").write_text("# Private\n\nnot from this repository\n")
    slot = cache / hashlib.sha256(linked_repo.as_uri().encode()).hexdigest()[:16] / head
    slot.parent.mkdir(parents=True)
    slot.symlink_to(impostor, target_is_directory=True)
    location = open_location(f"git+{linked_repo.as_uri()}@{head}#subdirectory=docs", cache)
    assert location.list() == ["guide.md"]  # fetched, not the impostor's notes.md
    assert bootstrap(Settings(data_dir=outside / "data")).location(f"git+{linked_repo.as_uri()}@{head}") \
        .cache_dir == outside / "data" / "git"  # not a shared /tmp
