"""Every relative link in README.md and docs/ names a file of the repository (a user once was
sent to a document the repository does not have)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_the_link_finder_sees_relative_links_only() -> None:
    text = "[a](docs/a.md#x) [b](https://example.org) [c](#here) [d](../shared/INTERFACE.md)"
    assert relative_links(text) == ["docs/a.md#x", "../shared/INTERFACE.md"]


def test_every_relative_link_names_an_existing_file() -> None:
    documents = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(documents) > 5
    broken = [
        f"{document.relative_to(ROOT)}: {target}"
        for document in documents
        for target in relative_links(document.read_text())
        if not (document.parent / target.split("#")[0]).exists()
    ]
    assert broken == []


def test_no_document_points_outside_the_repository() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "shared/" not in document.read_text(), document
