"""Documentation files as documents: .md, .mdx, .rst and .html, from a folder, single files or raw text (GCS, git).

Each ``load_*`` returns ``Document``s whose ``doc_id`` is ``"<source>:<relative path>"``; the source prefix is what
ingestion prunes within, so one source's run never deletes another's documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document, SourceKind
from askflow.ingest.sections import markdown_sections, rst_sections

DOC_SUFFIXES = (".md", ".mdx", ".rst", ".html", ".htm")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


def load_paths(paths: Iterable[Path], *, source: str = "docs", base_url: str | None = None) -> list[Document]:
    """Files and folders (recursively) of documentation. Unknown suffixes in folders are skipped; named files
    with an unknown suffix, or paths that do not exist, are an error."""
    documents: list[Document] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InvalidInput(f"no such file or folder: {path}")
        if path.is_dir():
            for file in sorted(_doc_files(path)):
                documents.append(load_file(file, file.relative_to(path).as_posix(), source, base_url))
        elif path.suffix.lower() in DOC_SUFFIXES:
            documents.append(load_file(path, path.name, source, base_url))
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


def _doc_files(folder: Path) -> Iterator[Path]:
    for file in folder.rglob("*"):
        if file.is_file() and is_doc_path(file.relative_to(folder).as_posix()):
            yield file


def load_file(file: Path, relative: str, source: str, base_url: str | None) -> Document:
    try:
        raw = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{file}: not UTF-8 text") from error
    url = f"{base_url.rstrip('/')}/{relative}" if base_url else file.resolve().as_uri()
    return parse_document(relative, raw, source=source, url=url)


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
