"""README.md and docs/*.md: every relative link resolves (file, and heading anchor in a Markdown target), and the
README links every document of docs/ (issue 13 item 9)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
# [text](target) outside code; images too. Targets with a scheme (https:, mailto:) are not checked.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file (outside code blocks)."""
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, code blocks and inline code left out."""
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


def broken(path: Path, root: Path = REPO) -> list[str]:
    """The relative links of `path` whose file, or heading anchor, does not exist."""
    out = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            out.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{path.relative_to(root)}: {target} (no heading #{anchor} in {dest.name})")
    return out


def test_every_relative_link_of_the_docs_resolves() -> None:
    assert DOCS, "docs/ has no Markdown file"
    problems = [p for path in [REPO / "README.md", *DOCS] for p in broken(path)]
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_doc() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md")}
    missing = [d.name for d in DOCS if d.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_the_link_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading, with `code`\n", encoding="utf-8")
    page.write_text("[ok](other.md#a-heading-with-code) [gone](missing.md) [bad](other.md#nope) "
                    "[web](https://example.com) `[code](x.md)`\n", encoding="utf-8")
    assert broken(page, tmp_path) == ["page.md: missing.md (no such file)",
                                      "page.md: other.md#nope (no heading #nope in other.md)"]
