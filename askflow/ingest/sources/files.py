"""Documentation files as documents: .md, .mdx, .rst and .html, from a folder, single files or raw text (GCS, git).

Each ``load_*`` returns ``Document``s whose ``doc_id`` is ``"<source>:<relative path>"``; the source prefix is what
ingestion prunes within, so one source's run never deletes another's documents.

Nothing outside a location's root is read, whatever links or paths say. The root is the folder (or the single file)
the user named, resolved once: a root that is itself a symbolic link is followed, since the user chose it. Below
the root, symbolic links are never followed, neither to files nor into folders, even when they point inside the
root (what they point to there is listed under its own path anyway): ``doc_files`` leaves them out of a listing
with a warning, and ``read_text_beneath`` opens a file one path component at a time from the root with
``O_NOFOLLOW``, so a link, or a ``..``, anywhere on the way is refused, even if the tree changes between listing and
reading. Only regular files are read: a FIFO or a device is refused (a FIFO is opened without blocking).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document, SourceKind
from askflow.ingest.sections import markdown_sections, rst_sections

DOC_SUFFIXES = (".md", ".mdx", ".rst", ".html", ".htm")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_SKIPPED_LINKS_SHOWN = 5

log = logging.getLogger(__name__)


def load_paths(paths: Iterable[Path], *, source: str = "docs", base_url: str | None = None) -> list[Document]:
    """Files and folders (recursively) of documentation. Unknown suffixes in folders are skipped; named files
    with an unknown suffix, or paths that do not exist, are an error. A folder is read as ``doc_files`` lists it
    (no symbolic link below it is followed); a named file is its own root: if it is a link, the regular file it
    points to is read, under the name the user gave."""
    documents: list[Document] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InvalidInput(f"no such file or folder: {path}")
        if path.is_dir():
            documents += [load_file(path, relative, source=source, base_url=base_url) for relative in doc_files(path)]
        elif path.suffix.lower() in DOC_SUFFIXES:
            target = path.resolve()
            text = read_text_beneath(target.parent, target.name)
            documents.append(_document(path.name, text, path, source=source, base_url=base_url))
        else:
            raise InvalidInput(f"{path}: not a documentation file ({', '.join(DOC_SUFFIXES)})")
    return documents


def parse_document(relative: str, raw: str, *, source: str, url: str) -> Document:
    suffix = Path(relative).suffix.lower()
    metadata: dict = {"format": suffix.lstrip("."), "path": relative}
    title = ""
    text = raw
    if suffix in (".md", ".mdx"):
        text, front = _split_front_matter(raw)
        metadata.update({k: v for k, v in front.items() if isinstance(v, (str, int, float, bool))})
        title = str(front.get("title", "")) or _first_heading(markdown_sections(text))
    elif suffix == ".rst":
        title = _first_heading(rst_sections(text))
    elif suffix in (".html", ".htm"):
        title, text = html_to_markdown(raw)
        metadata["format"] = "html"
    title = title or Path(relative).stem.replace("-", " ").replace("_", " ")
    return Document(
        doc_id=f"{source}:{relative}", text=text, title=title, url=url, kind=SourceKind.DOCS, metadata=metadata
    )


def html_to_markdown(raw: str) -> tuple[str, str]:
    """Title and Markdown-like text of an HTML page: headings become ``#`` lines, ``<pre>`` becomes fenced code."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    body = soup.body or soup
    for level in range(1, 5):
        for heading in body.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for pre in body.find_all("pre"):
        pre.replace_with(f"\n\n```\n{pre.get_text()}\n```\n\n")
    for block in body.find_all(["p", "li", "div", "tr"]):
        block.insert_after("\n\n")
    text = re.sub(r"\n{3,}", "\n\n", body.get_text())
    return title, text.strip()


def is_doc_path(relative: str) -> bool:
    """A documentation file by its suffix, not inside a hidden folder (``.git``, ``.github``) nor hidden itself."""
    path = PurePosixPath(relative)
    return path.suffix.lower() in DOC_SUFFIXES and not any(part.startswith(".") for part in path.parts)


def doc_files(root: Path) -> list[str]:
    """Relative paths of the documentation files below ``root``, sorted: regular files only, hidden folders not
    entered, and symbolic links left out (a warning names them), whether they point to a file or a folder, inside
    the root or out of it."""
    found: list[str] = []
    links: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        try:
            with os.scandir(root / prefix) as entries:
                for entry in entries:
                    relative = prefix + entry.name
                    if entry.name.startswith("."):
                        continue
                    if entry.is_symlink():
                        if is_doc_path(relative) or entry.is_dir():  # what following it would have read
                            links.append(relative)
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(relative + "/")
                    elif entry.is_file(follow_symlinks=False) and is_doc_path(relative):
                        found.append(relative)
        except OSError as error:
            raise InvalidInput(f"{root / prefix}: cannot list the folder ({error.strerror})") from None
    if links:
        shown = ", ".join(sorted(links)[:_SKIPPED_LINKS_SHOWN]) + (", ..." if len(links) > _SKIPPED_LINKS_SHOWN else "")
        log.warning("%s: %d symbolic links left out (links are not followed below a location's root): %s",
                    root, len(links), shown)
    return sorted(found)


def load_file(root: Path, relative: str, *, source: str, base_url: str | None) -> Document:
    """The documentation file at ``relative`` below ``root``, read by ``read_text_beneath``."""
    return _document(relative, read_text_beneath(root, relative), root / relative, source=source, base_url=base_url)


def read_text_beneath(root: Path, relative: str) -> str:
    """The UTF-8 text of the regular file at ``relative`` below ``root``, opened one path component at a time from
    the root without following symbolic links. An absolute path, a ``..``, a link on the way, or a file that is not
    a regular one is ``InvalidInput``."""
    fd = _open_beneath(root, relative, folder=False)
    with open(fd, encoding="utf-8") as file:  # universal newlines, as Path.read_text
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{root / relative}: not a regular file")
        try:
            return file.read()
        except UnicodeDecodeError as error:
            raise InvalidInput(f"{root / relative}: not UTF-8 text") from error


def is_folder_beneath(root: Path, relative: str) -> bool:
    """Whether ``relative`` names a folder below ``root`` (or the root itself, when empty) that is reached
    without a symbolic link or a ``..``."""
    try:
        os.close(_open_beneath(root, relative, folder=True))
    except InvalidInput:
        return False
    return True


def _open_beneath(root: Path, relative: str, *, folder: bool) -> int:
    """A file descriptor of ``relative`` below ``root``: each component is opened relative to the folder before it
    with ``O_NOFOLLOW``, so the path cannot leave the root, whatever changes in the tree meanwhile."""
    parts = PurePosixPath(relative).parts
    if parts[:1] == ("/",) or ".." in parts or not (parts or folder):
        raise InvalidInput(f"{relative!r}: not a path inside {root}")
    current: int | None = None
    reached = root
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself may be a link
        for index, part in enumerate(parts):
            reached = reached / part
            last = index == len(parts) - 1
            flags = _NO_FOLLOW | (os.O_NONBLOCK if last and not folder else os.O_DIRECTORY)
            opened = os.open(part, flags, dir_fd=current)
            os.close(current)
            current = opened
    except OSError as error:
        if current is not None:
            os.close(current)
        link = error.errno in (errno.ELOOP, errno.ENOTDIR) and reached.is_symlink()
        reason = "a symbolic link, not followed below the location's root" if link else error.strerror
        raise InvalidInput(f"{reached}: not read ({reason})") from None
    return current


def _document(relative: str, text: str, file: Path, *, source: str, base_url: str | None) -> Document:
    url = f"{base_url.rstrip('/')}/{relative}" if base_url else file.resolve().as_uri()
    return dataclasses.replace(parse_document(relative, text, source=source, url=url), version=file_version(file, text))


def file_version(file: Path, text: str) -> str:
    """A local file's version (its provenance): its modification time and its content's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    try:
        mtime = dt.datetime.fromtimestamp(file.stat().st_mtime, tz=dt.UTC).isoformat(timespec="seconds")
    except OSError:
        return f"sha256 {digest}"
    return f"mtime {mtime}; sha256 {digest}"


def _split_front_matter(raw: str) -> tuple[str, dict]:
    match = _FRONT_MATTER.match(raw)
    if not match:
        return raw, {}
    import yaml

    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        front = {}
    return raw[match.end() :], front if isinstance(front, dict) else {}


def _first_heading(sections) -> str:
    for section in sections:
        if section.path:
            return section.path[0]
    return ""
