"""MkDocs hooks: the repository's own Markdown files in the site, and links that work both on
the site and where the Markdown is read as files (a forge's file view, an editor).

The pages link as files do: `docs/sinks.md` from README.md, `../RELIABILITY.md` or
`../deploy/daemonset.yaml` from a page in docs/. Here each such link is resolved in the
repository: a file the site carries becomes a link to its page; any other file of the
repository must exist (else the build fails under --strict) and links to the repository's web
view where `repo_url` is set, or stays as its text.

And a `|` in code in a table: a forge's Markdown needs it escaped there (`\\|`), Python-Markdown
ends no cell inside a code span and would show the backslash."""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

REPOSITORY: Final = Path(__file__).resolve().parent.parent
DOCS: Final = "docs"
# Markdown files outside docs/ that the site carries, and the page each becomes.
ROOT_PAGES: Final = {
    "README.md": "index.md",
    "RELIABILITY.md": "reliability.md",
    "BENCHMARKS.md": "benchmarks.md",
}
_LINK: Final = re.compile(r"(?P<text>!?\[(?:[^\[\]]|\[[^\[\]]*\])*\])\((?P<target>[^()\s]+)\)")
_FENCE: Final = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN: Final = re.compile(r"`[^`]*`")

log = logging.getLogger("mkdocs.hooks.kstat")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for source, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(REPOSITORY / source)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    pages = {uri: source for source, uri in ROOT_PAGES.items()}
    source = pages.get(page.file.src_uri, f"{DOCS}/{page.file.src_uri}")
    lines, in_fence = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        lines.append(line if in_fence else _for_the_site(line, source, page, config))
    return "\n".join(lines)


def _for_the_site(line: str, source: str, page: Page, config: MkDocsConfig) -> str:
    resolved = _LINK.sub(lambda link: _resolved(link, source, page, config), line)
    if resolved.startswith("|"):  # a table's row
        resolved = _CODE_SPAN.sub(lambda code: code[0].replace("\\|", "|"), resolved)
    return resolved


def _resolved(link: re.Match[str], source: str, page: Page, config: MkDocsConfig) -> str:
    text, target = link["text"], link["target"]
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith(("#", "/")):
        return link[0]
    in_repository = posixpath.normpath(posixpath.join(posixpath.dirname(source), parts.path))
    anchor = f"#{parts.fragment}" if parts.fragment else ""
    site_uri = ROOT_PAGES.get(in_repository)
    if site_uri is None and in_repository.startswith(f"{DOCS}/"):
        site_uri = in_repository.removeprefix(f"{DOCS}/")
    if site_uri is not None:
        # A page or picture of the site: MkDocs checks that it, and its anchor, exist.
        relative = posixpath.relpath(site_uri, posixpath.dirname(page.file.src_uri) or ".")
        return f"{text}({relative}{anchor})"
    path = REPOSITORY / in_repository
    if in_repository.startswith("../") or not path.exists():
        log.warning(f"Doc file '{page.file.src_uri}' links to '{target}': no such file in the repository")
    elif config.repo_url:
        view = "tree" if path.is_dir() else "blob"
        return f"{text}({config.repo_url.rstrip('/')}/{view}/main/{in_repository}{anchor})"
    return text.removeprefix("!").removeprefix("[").removesuffix("]")
