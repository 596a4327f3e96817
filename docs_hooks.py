"""mkdocs hooks: links from docs/*.md to files elsewhere in the repository work on the site too.

The pages link such files relatively (``../examples/fastapi_app.py``,
``../benchmarks/results/scale-requests-per-second.png``), which is right when the Markdown is
read in the repository. mkdocs only knows docs/, so the hook copies each linked file into the
site under ``repo/`` and points the links at the copies. A link to a file that does not exist
is left alone, and the strict build still fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

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
