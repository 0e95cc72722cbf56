"""The Markdown documentation stays navigable: every relative link and image in README.md,
BENCHMARKS.md and docs/**/*.md points at a file that exists, every #anchor names a heading of its
target (GitHub's slugs), and the README stays a front door (at most README_MAX_LINES lines)."""

import functools
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown_it
import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def markdown_files() -> list[Path]:
    """The project's own Markdown: not the npm packages `make vega` installs under docs/browser."""
    docs = [path for path in sorted((ROOT / "docs").rglob("*.md")) if "node_modules" not in path.parts]
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *docs]


def parse(path: Path) -> list:
    # CommonMark plus GitHub's tables, so links inside table cells are found too.
    return markdown_it.MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def plain_text(inline) -> str:
    """A heading's text as GitHub slugs it: the rendered text, without markup."""
    return "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))


def github_slug(text: str) -> str:
    """Lowercase; keep letters, marks, digits, '_' (connector punctuation), '-' and spaces; spaces to '-'."""

    def kept(c: str) -> bool:
        return c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"

    return "".join(c for c in text.lower() if kept(c)).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the headings of a file: a repeated slug gets -1, -2, ..."""
    tokens, seen, result = parse(path), {}, set()
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        slug = github_slug(plain_text(inline))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(result)


def links(path: Path) -> list[str]:
    """Every link target and image source in a file, in order."""
    found = []
    for token in parse(path):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(child.attrs["href"])
            elif child.type == "image":
                found.append(child.attrs["src"])
    return found


def relative_links() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(ROOT)), href)
        for path in markdown_files()
        for href in links(path)
        if not urlsplit(href).scheme and not href.startswith("//")
    ]


@pytest.mark.parametrize(("source", "href"), relative_links())
def test_relative_link_resolves(source: str, href: str):
    url = urlsplit(href)
    origin = ROOT / source
    target = (origin.parent / unquote(url.path)).resolve() if url.path else origin
    assert target.exists(), f"{source}: link {href!r} points at {target}, which does not exist"
    if url.fragment and target.suffix == ".md":
        assert unquote(url.fragment) in anchors(target), (
            f"{source}: link {href!r}: no heading of {target.relative_to(ROOT)} has the anchor #{url.fragment}"
        )


def test_documentation_has_links_to_check():
    # Guards the parametrisation above: a parser change that finds no links would pass silently.
    assert len(relative_links()) > 20


def test_github_slugs():
    assert github_slug("Sweeps: the in-stage grid or DVC's queue") == "sweeps-the-in-stage-grid-or-dvcs-queue"
    assert github_slug("Results (run of 2026-12-01, 09:57–10:32 UTC)") == "results-run-of-2026-12-01-09571032-utc"
    assert github_slug("trainable_stages and transfer.freeze") == "trainable_stages-and-transferfreeze"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Run\n\n## Results\n\ntext\n\n## Results\n\n## `make` Results\n")
    assert anchors(page) == {"run", "results", "results-1", "make-results"}


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_carries_no_commit_hashes():
    # Hashes go stale; BENCHMARKS.md and docs/benchmarks-history.md record which commit measured what.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.findall(r"`[0-9a-f]{7,40}`", text)
