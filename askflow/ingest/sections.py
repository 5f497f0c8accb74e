"""Split a page into its sections (heading path + body) and a body into blocks that must stay whole.

LangChain's ``MarkdownHeaderTextSplitter`` does the Markdown side. reStructuredText has no header splitter in
LangChain, so RST headings (a title line with an under- and optional overline of one punctuation character, levels
in order of first appearance) are parsed here; that is the only hand-rolled parsing in the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._<>])\1{2,}\s*$")
_FENCE = re.compile(r"^(```|~~~)")
_RST_DIRECTIVE_WITH_BODY = re.compile(
    r"^\s*(\.\. (code-block|code|sourcecode|literalinclude|exampleinclude)::|.*::\s*$)"
)


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]
    body: str

    @property
    def heading(self) -> str:
        return " > ".join(self.path)


def rst_sections(text: str) -> list[Section]:
    lines = text.splitlines()
    levels: list[str] = []
    path: list[str] = []
    sections: list[Section] = []
    body: list[str] = []
    i = 0

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(Section(tuple(path), content))
        body.clear()

    while i < len(lines):
        line = lines[i]
        title, style, consumed = None, None, 0
        # over- and underlined title
        if _ADORNMENT.match(line) and i + 2 < len(lines) and lines[i + 1].strip() and _ADORNMENT.match(lines[i + 2]):
            if lines[i + 2].strip()[0] == line.strip()[0]:
                title, style, consumed = lines[i + 1].strip(), "over" + line.strip()[0], 3
        # underlined title
        elif (
            line.strip()
            and not line.startswith(" ")
            and i + 1 < len(lines)
            and _ADORNMENT.match(lines[i + 1])
            and len(lines[i + 1].rstrip()) >= len(line.rstrip()) * 0.6
        ):
            title, style, consumed = line.strip(), lines[i + 1].strip()[0], 2
        if title is None:
            body.append(line)
            i += 1
            continue
        flush()
        if style not in levels:
            levels.append(style)
        depth = levels.index(style)
        del path[depth:]
        path.extend([""] * (depth - len(path)))
        path.append(title)
        path[:] = [p for p in path if p]
        i += consumed
    flush()
    return sections


def markdown_sections(text: str) -> list[Section]:
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    splitter = MarkdownHeaderTextSplitter(
        headers_to_split_on=[("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")], strip_headers=True
    )
    sections = []
    for doc in splitter.split_text(text):
        path = tuple(doc.metadata[k] for k in ("h1", "h2", "h3", "h4") if k in doc.metadata)
        if doc.page_content.strip():
            sections.append(Section(path, doc.page_content.strip()))
    return sections


def blocks(body: str) -> list[str]:
    """Paragraph-level blocks; a code block (Markdown fence, RST literal or code directive) is one block."""
    out: list[str] = []
    current: list[str] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line.strip()):
            fence = line.strip()[:3]
            code = [line]
            i += 1
            while i < len(lines):
                code.append(lines[i])
                i += 1
                if lines[i - 1].strip().startswith(fence):
                    break
            _close(current, out)
            out.append("\n".join(code))
            continue
        if _RST_DIRECTIVE_WITH_BODY.match(line) and not line.startswith(" "):
            code = [line]
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                code.append(lines[i])
                i += 1
            _close(current, out)
            out.append("\n".join(code).rstrip())
            continue
        if not line.strip():
            _close(current, out)
        else:
            current.append(line)
        i += 1
    _close(current, out)
    return [b for b in out if b.strip()]


def _close(current: list[str], out: list[str]) -> None:
    if current:
        out.append("\n".join(current))
        current.clear()
