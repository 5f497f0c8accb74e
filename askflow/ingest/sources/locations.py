"""Where documentation lives: a local folder, a GCS bucket/prefix, or a git repository.

A location is named by one string, so a DAG param, a CLI argument and a setting all say it the same way:

- ``/path/to/docs`` — a folder (``FolderLocation``, here);
- ``gs://bucket/prefix/`` — the objects under a prefix (the ``gcs_documents`` adapter);
- ``git+URL[@REF][#subdirectory=DIR]`` — pip's syntax: a repository at a branch, tag or commit (default ``HEAD``;
  the ``git_documents`` adapter);
- ``https://docs.example.com/sitemap.xml`` — a website's pages from its sitemap (or sitemap index), or a start URL
  crawled under its path (the ``web_documents`` adapter).

``bootstrap``'s ``Components.location(spec)`` opens any of them. ``pin()`` turns a location into one that reads the
same version every time (a git ref becomes its commit), so that the batches of one ingestion run, each in its own
task and maybe on its own worker, read the same tree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document
from askflow.ingest.sources.files import doc_files, load_file, load_paths
from askflow.ports import DocsLocation

REMOTE_SCHEMES = ("gs://", "git+", "https://", "http://")


@dataclass
class FolderLocation:
    """The documentation files below ``root`` and nothing else: no symbolic link below the root is listed or read,
    and a relative path that leaves the root (``..``, an absolute path) is refused (``askflow.ingest.sources.files``).
    """

    root: Path

    def pin(self) -> str:
        return str(self.root)

    @property
    def public(self) -> str:
        return str(self.root)

    def list(self) -> list[str]:
        if not self.root.is_dir():
            raise InvalidInput(f"no such folder: {self.root}")
        return doc_files(self.root)

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        return load_file(self.root, relative, source=source, base_url=base_url)


def load_locations(specs: list[str], *, open_location: Callable[[str], DocsLocation], source: str,
                   base_url: str | None = None) -> list[Document]:
    """Every documentation file of the given locations; local files may be named one by one. Each document names
    the location it was read from (as logs may show it: its provenance)."""
    documents: list[Document] = []
    for spec in map(str, specs):
        if spec.startswith(REMOTE_SCHEMES):
            location = open_location(spec)
            read = [location.load(relative, source=source, base_url=base_url) for relative in location.list()]
            public = location.public
        else:
            read, public = load_paths([Path(spec)], source=source, base_url=base_url), str(Path(spec).resolve())
        documents += [document if document.location else dataclasses.replace(document, location=public)
                      for document in read]
    return documents
