"""mkdocs hooks: repository files linked by the pages, and a site that works from files.

Links from docs/*.md to files elsewhere in the repository work on the site too. The pages
link such files relatively (``../examples/fastapi_app.py``,
``../benchmarks/results/scale-requests-per-second.png``), which is right when the Markdown is
read in the repository. mkdocs only knows docs/, so the hook copies each linked file into the
site under ``repo/`` and points the links at the copies. A link to a file that does not exist
is left alone, and the strict build still fails on it.

The README says to open ``site/index.html``: every relative link of the built site must then
name a file (``quickstart.html``), not a folder (``quickstart/``, which only a web server
turns into its index.html). mkdocs.yml sets ``use_directory_urls: false``; after the build,
:func:`links_that_need_a_server` checks every page (but 404.html, which only a server shows),
and the build fails on any such link. A link to a missing file is mkdocs' own strict check.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from mkdocs.structure.files import Files

ROOT = Path(__file__).parent
DOCS = ROOT / "docs"
SITE_FOLDER = "repo"
OUTSIDE = re.compile(r"\]\(\.\./(?P<path>[^)#\s]+)")

_linked: set[str] = set()


def _target(path: str) -> Path | None:
    target = (ROOT / path).resolve()
    inside = target.is_relative_to(ROOT) and not target.is_relative_to(DOCS)
    return target if inside and target.is_file() else None


def on_files(files: Files, config: Any) -> Files:
    """Add every repository file that a page links as ``../path`` to the site."""
    from mkdocs.structure.files import File, InclusionLevel

    _linked.clear()
    for page in sorted(DOCS.glob("*.md")):
        for match in OUTSIDE.finditer(page.read_text()):
            path = match["path"]
            if path not in _linked and _target(path) is not None:
                _linked.add(path)
                files.append(
                    File.generated(
                        config,
                        f"{SITE_FOLDER}/{path}",
                        abs_src_path=str(_target(path)),
                        inclusion=InclusionLevel.NOT_IN_NAV,
                    )
                )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point ``../path`` links at the copies that :func:`on_files` added."""

    def point(match: re.Match[str]) -> str:
        path = match["path"]
        return f"]({SITE_FOLDER}/{path}" if path in _linked else match.group(0)

    return OUTSIDE.sub(point, markdown)


class _Links(HTMLParser):
    """The ``href`` and ``src`` values of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def links_that_need_a_server(site: Path) -> list[str]:
    """Relative links of the built site that name a folder (``page: link``)."""
    bad = []
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site) == Path("404.html"):
            continue
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for link in parser.found:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
                continue  # another site, mailto:, data:, a place in this page
            path = unquote(parts.path)
            if path.endswith("/") or path == "." or (page.parent / path).is_dir():
                bad.append(f"{page.relative_to(site)}: {link}")
    return bad


def on_post_build(config: Any) -> None:
    """Fail the build if a page links a folder (see the module docstring)."""
    from mkdocs.exceptions import PluginError

    bad = links_that_need_a_server(Path(config["site_dir"]))
    if bad:
        raise PluginError(
            f"{len(bad)} link(s) of the site name a folder, and break when site/index.html is"
            " opened from the file system: " + "; ".join(bad[:10])
        )
