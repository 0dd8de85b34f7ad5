"""The documentation's links hold: every relative link in README.md and docs/*.md names a file that exists, and every
#anchor names a heading of its page by GitHub's rules. The README stays a front door (at most 1 600 words).

Standalone on purpose: the standard library and pytest only, no fixtures of the service's tests, no project code.
"""

import re
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_README_WORDS = 1600

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# [text](target "title") and ![alt](target); the target may be in <...>. Nested brackets in the text are allowed once.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'(][^)]*)?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_code(text: str) -> list[tuple[str, bool]]:
    """Each line with whether it belongs to a fenced code block (its fences included); HTML comments blanked."""
    text = HTML_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    lines, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            lines.append((line, True))
        elif match:
            fence = match.group(1)
            lines.append((line, True))
        else:
            lines.append((line, False))
    return lines


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out (code in them is no link)."""
    return ["" if in_code else INLINE_CODE.sub("", line) for line, in_code in split_code(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case; only letters, digits, spaces, hyphens and underscores stay;
    each space becomes a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # so does inline HTML
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The text of every heading outside code: ATX (# Title) and setext (Title over === or ---)."""
    found, lines = [], split_code(text)
    for i, (line, in_code) in enumerate(lines):
        if in_code or not line.strip():
            continue
        atx = ATX_HEADING.match(line)
        if atx:
            found.append(atx.group(1) or "")
        elif SETEXT_UNDERLINE.match(line) and i > 0:
            above, above_in_code = lines[i - 1]
            if above.strip() and not above_in_code and not ATX_HEADING.match(above) and "|" not in above:
                found.append(above.strip())
    return found


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path.read_text(encoding="utf-8")):
        base = slug(heading)
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a Markdown file, outside code."""
    found = []
    for number, line in enumerate(prose_lines(path.read_text(encoding="utf-8")), start=1):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_LINK):
            for match in pattern.finditer(line):
                found.append((number, match.group(1).strip("<>")))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of one file, one sentence each; empty if nothing."""
    problems = []
    for number, target in links(path):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # https:, mailto: and the like are not ours to check here
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        file_part = urllib.parse.unquote(file_part.split("?")[0])
        linked = (path.parent / file_part).resolve() if file_part else path
        if file_part.startswith("/"):
            linked = (root / file_part.lstrip("/")).resolve()
        if not linked.exists():
            problems.append(f"{where}: no such file {linked}")
            continue
        if anchor:
            anchor = urllib.parse.unquote(anchor)
            if linked.suffix.lower() != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(linked):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert path.exists()
    assert broken_links(path) == []


def test_the_docs_have_links_to_check():
    """Guards the checker itself: if it stopped finding links, the test above would pass on anything."""
    assert sum(len(links(path)) for path in doc_files()) > 20
    assert {"quick-start-on-heroku", "tests"} <= anchors(ROOT / "README.md")


def test_readme_is_a_front_door():
    words = len((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert words <= MAX_README_WORDS, f"README.md has {words} words; move details into docs/"


@pytest.mark.parametrize(("heading", "expected"), [
    ("Quick start on a Raspberry Pi or Linux", "quick-start-on-a-raspberry-pi-or-linux"),
    ("Self-hosting (Raspberry Pi, VPS)", "self-hosting-raspberry-pi-vps"),
    ("select() and poll()", "select-and-poll"),
    ("GET / during a storm", "get--during-a-storm"),
    ("Log lines full of [redacted]", "log-lines-full-of-redacted"),
    ("Only environment variables, no .env", "only-environment-variables-no-env"),
    ("TCONNECT_REGION and the 401", "tconnect_region-and-the-401"),
    ("What is checked, in this order", "what-is-checked-in-this-order"),
    ("Über [the page](page.md)", "über-the-page"),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Part\n\n## Part\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Title\n\n## Use `this`\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#part-1) [ok](#use-this) [ok](https://example.com/x)\n"
        "![ok](docs/other.md) <img src=\"docs/other.md\"> `[in code](missing.md)`\n\n"
        "```\n[in a fence](missing.md)\n```\n\n"
        "[gone](docs/missing.md) [no such part](docs/other.md#part-2) [no such heading](#title-1)\n"
        "<img src=\"docs/missing.png\">\n",
        encoding="utf-8",
    )
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/missing.md", "docs/other.md#part-2", "#title-1", "docs/missing.png",
    ], problems
