"""GitLocation: documentation files in a git repository at a branch, tag or commit (pip's
``git+URL[@REF][#subdirectory=DIR]``), fetched shallowly with GitPython into a cache folder.

A repository's content is not trusted: its root is the checkout's ``#subdirectory`` folder, which must be reached
inside the checkout without ``..`` or a symbolic link, and below it the files are listed and read as a
``FolderLocation``'s (committed symbolic links are left out, wherever they point). A URL or ref starting with ``-``
is refused, and every git command line puts ``--`` before the URL and ref, so neither is ever read as an option
(``--upload-pack=...`` would run a command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document
from askflow.ingest.sources.files import is_folder_beneath, load_file
from askflow.ingest.sources.locations import FolderLocation

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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
            if ".." in PurePosixPath(subdirectory).parts:
                raise InvalidInput(f"#subdirectory={value}: must be a folder inside the repository (no '..')")
        url, ref = rest, "HEAD"
        if "@" in rest.rsplit("/", 1)[-1]:  # the ref follows the repository path; user@host stays in the URL
            url, ref = rest.rsplit("@", 1)
        if not url or not ref:
            raise InvalidInput(f"{spec}: expected git+URL[@REF][#subdirectory=DIR]")
        for name, value in (("URL", url), ("ref", ref)):
            if value.startswith("-"):
                raise InvalidInput(f"git {name} {value!r} starts with '-': refused, git would read it as an option")
        return cls(url, ref, subdirectory, cache_dir)

    def pin(self) -> str:
        commit = self._checkout().name
        return f"git+{self.url}@{commit}" + (f"#subdirectory={self.subdirectory}" if self.subdirectory else "")

    def list(self) -> list[str]:
        return FolderLocation(self._root()).list()

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        document = dataclasses.replace(load_file(self._root(), relative, source=source, base_url=base_url),
                                       location=self.public, version=f"commit {self._checkout().name}")
        if base_url:
            return document
        return dataclasses.replace(document, url=self._link(relative))  # the repository's, not this worker's copy

    @property
    def public(self) -> str:
        """The location as logs may show it: without credentials."""
        return f"git+{self.public_url}@{self.ref}" + (f"#subdirectory={self.subdirectory}" if self.subdirectory else "")

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
        """The checkout's ``#subdirectory`` folder, refused unless reached without a symbolic link (a committed
        ``docs -> /`` or ``docs -> ../..`` is not a folder of the repository)."""
        checkout = self._checkout()
        if not is_folder_beneath(checkout, self.subdirectory):
            raise InvalidInput(f"{self.public_url}@{self.ref}: no folder {self.subdirectory!r} in the repository "
                               "(symbolic links are not followed)")
        return checkout / self.subdirectory

    def _checkout(self) -> Path:
        """A shallow checkout of the ref, kept per commit under the cache folder: batches that run on the same
        worker fetch a pinned commit once. Each fetch goes to its own scratch folder that is renamed into place,
        so tasks running side by side on one worker never share a half-made checkout."""
        if self._checked_out is not None:
            return self._checked_out
        from git import GitCommandError, Repo

        repo_dir = (self.cache_dir or Path(tempfile.gettempdir()) / "askflow-git") / hashlib.sha256(
            self.url.encode()).hexdigest()[:16]
        cached = repo_dir / self.ref
        if _COMMIT.match(self.ref) and not repo_dir.is_symlink() and not cached.is_symlink() and (
                cached / ".git").is_dir():  # a checkout this cache made, never a link planted in its place
            self._checked_out = repo_dir / self.ref
            return self._checked_out
        repo_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=repo_dir))
        try:
            repo = Repo.init(scratch)
            repo.git.fetch("--depth", "1", "--no-tags", "--", self.url, self.ref)
            repo.git.checkout("--quiet", "FETCH_HEAD", "--")
            target = repo_dir / repo.head.commit.hexsha
            if target.is_symlink():  # planted where this commit's checkout belongs: never followed, replaced
                target.unlink()
            if not (target / ".git").is_dir():
                with contextlib.suppress(OSError):  # another task's checkout got there first: same commit
                    scratch.rename(target)  # atomic
        except GitCommandError as error:
            fatal = [line.split("fatal:", 1)[1].strip(" '")
                     for line in str(error.stderr).splitlines() if "fatal:" in line]
            reason = (fatal[0] if fatal else "git failed").replace(self.url, self.public_url)
            raise InvalidInput(f"git: cannot fetch {self.ref!r} from {self.public_url}: {reason}") from None
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        self._checked_out = target
        return target


