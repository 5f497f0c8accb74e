"""Where documentation lives: a local folder, a GCS bucket/prefix, or a git repository.

A location is named by one string, so a DAG param, a CLI argument and a setting all say it the same way:

- ``/path/to/docs`` — a folder;
- ``gs://bucket/prefix/`` — the objects under a prefix (``STORAGE_EMULATOR_HOST`` points the client at a fake);
- ``git+URL[@REF][#subdirectory=DIR]`` — pip's syntax: a repository at a branch, tag or commit (default ``HEAD``).

``pin()`` turns a location into one that reads the same version every time (a git ref becomes its commit), so
that the batches of one ingestion run, each in its own task and maybe on its own worker, read the same tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document
from askflow.ingest.loaders import is_doc_path, load_file, load_paths, parse_document

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class DocsLocation(Protocol):
    def pin(self) -> str:
        """This location as a string that names one fixed version of it."""

    def list(self) -> list[str]:
        """Relative paths of the documentation files, sorted."""

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document: ...


def open_location(spec: str, *, cache_dir: Path | None = None) -> DocsLocation:
    spec = str(spec).strip()
    if not spec:
        raise InvalidInput("a documentation location is empty")
    if spec.startswith("gs://"):
        bucket, _, prefix = spec.removeprefix("gs://").partition("/")
        if not bucket:
            raise InvalidInput(f"{spec}: no bucket named (gs://BUCKET/PREFIX)")
        return GcsLocation(bucket, prefix.strip("/") + "/" if prefix.strip("/") else "")
    if spec.startswith("git+"):
        return GitLocation.parse(spec, cache_dir=cache_dir)
    return FolderLocation(Path(spec))


def public_spec(spec: str) -> str:
    """The location as logs may show it: a git URL without its credentials."""
    if not spec.startswith("git+"):
        return spec
    location = GitLocation.parse(spec)
    return spec.replace(location.url, location.public_url, 1)


@dataclass
class FolderLocation:
    root: Path

    def pin(self) -> str:
        return str(self.root)

    def list(self) -> list[str]:
        if not self.root.is_dir():
            raise InvalidInput(f"no such folder: {self.root}")
        relative_paths = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(relative for relative in relative_paths if is_doc_path(relative))

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        return load_file(self.root / relative, relative, source, base_url)


@dataclass
class GcsLocation:
    bucket: str
    prefix: str = ""  # empty, or a folder ending in "/"
    _storage: object = field(default=None, init=False, repr=False)

    def pin(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def list(self) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            blobs = self._client().list_blobs(self.bucket, prefix=self.prefix)
            names = [blob.name for blob in blobs]
        except NotFound as error:
            raise InvalidInput(f"no such bucket: gs://{self.bucket}") from error
        return sorted(r for name in names if is_doc_path(r := name[len(self.prefix):]))

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        name = f"{self.prefix}{relative}"
        try:
            raw = self._client().bucket(self.bucket).blob(name).download_as_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInput(f"gs://{self.bucket}/{name}: not UTF-8 text") from error
        url = f"{base_url.rstrip('/')}/{relative}" if base_url else f"gs://{self.bucket}/{name}"
        return parse_document(relative, raw, source=source, url=url)

    def _client(self):
        from google.cloud import storage

        if self._storage is None:
            self._storage = storage.Client()
        return self._storage


@dataclass
class GitLocation:
    url: str
    ref: str = "HEAD"
    subdirectory: str = ""
    cache_dir: Path | None = None
    _checked_out: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def parse(cls, spec: str, *, cache_dir: Path | None = None) -> GitLocation:
        rest, _, fragment = spec.removeprefix("git+").partition("#")
        subdirectory = ""
        if fragment:
            key, _, value = fragment.partition("=")
            if key != "subdirectory" or not value:
                raise InvalidInput(f"{spec}: the only fragment understood is #subdirectory=DIR")
            subdirectory = value.strip("/")
        url, ref = rest, "HEAD"
        if "@" in rest.rsplit("/", 1)[-1]:  # the ref follows the repository path; user@host stays in the URL
            url, ref = rest.rsplit("@", 1)
        if not url or not ref:
            raise InvalidInput(f"{spec}: expected git+URL[@REF][#subdirectory=DIR]")
        return cls(url, ref, subdirectory, cache_dir)

    def pin(self) -> str:
        commit = self._checkout().name
        return f"git+{self.url}@{commit}" + (f"#subdirectory={self.subdirectory}" if self.subdirectory else "")

    def list(self) -> list[str]:
        return FolderLocation(self._root()).list()

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        document = load_file(self._root() / relative, relative, source, base_url)
        if base_url:
            return document
        return dataclasses.replace(document, url=self._link(relative))  # the repository's, not this worker's copy

    @property
    def public_url(self) -> str:
        """The URL without credentials (``https://x-access-token:TOKEN@github.com/...``): what links and errors show."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))

    def _link(self, relative: str) -> str:
        path = f"{self.subdirectory}/{relative}" if self.subdirectory else relative
        commit = self._checkout().name
        if self.public_url.startswith("https://github.com/"):
            return f"{self.public_url.removesuffix('.git')}/blob/{commit}/{path}"
        return f"{self.public_url}@{commit}#{path}"

    def _root(self) -> Path:
        root = self._checkout() / self.subdirectory
        if not root.is_dir():
            raise InvalidInput(f"{self.public_url}@{self.ref}: no folder {self.subdirectory!r} in the repository")
        return root

    def _checkout(self) -> Path:
        """A shallow checkout of the ref, kept per commit under the cache folder: batches that run on the same
        worker fetch a pinned commit once. Each fetch goes to its own scratch folder that is renamed into place,
        so tasks running side by side on one worker never share a half-made checkout."""
        if self._checked_out is not None:
            return self._checked_out
        from git import GitCommandError, Repo

        repo_dir = (self.cache_dir or Path(tempfile.gettempdir()) / "askflow-git") / hashlib.sha256(
            self.url.encode()).hexdigest()[:16]
        if _COMMIT.match(self.ref) and (repo_dir / self.ref / ".git").is_dir():
            self._checked_out = repo_dir / self.ref
            return self._checked_out
        repo_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=repo_dir))
        try:
            repo = Repo.init(scratch)
            repo.git.fetch("--depth", "1", "--no-tags", self.url, self.ref)
            repo.git.checkout("--quiet", "FETCH_HEAD")
            target = repo_dir / repo.head.commit.hexsha
            if not (target / ".git").is_dir():
                with contextlib.suppress(OSError):  # another task's checkout got there first: same commit
                    scratch.rename(target)  # atomic
        except GitCommandError as error:
            fatal = [line.split("fatal:", 1)[1].strip(" '") for line in str(error.stderr).splitlines() if "fatal:" in line]
            reason = (fatal[0] if fatal else "git failed").replace(self.url, self.public_url)
            raise InvalidInput(f"git: cannot fetch {self.ref!r} from {self.public_url}: {reason}") from None
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        self._checked_out = target
        return target


def load_locations(specs: list[str], *, source: str, base_url: str | None = None) -> list[Document]:
    """Every documentation file of the given locations; local files may be named one by one."""
    documents: list[Document] = []
    for spec in map(str, specs):
        if spec.startswith(("gs://", "git+")):
            location = open_location(spec)
            documents += [location.load(relative, source=source, base_url=base_url) for relative in location.list()]
        else:
            documents += load_paths([Path(spec)], source=source, base_url=base_url)
    return documents
