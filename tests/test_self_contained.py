"""The repository stands on its own: no machine paths, no references outside it, no broken doc links.

Every tracked text file (``git ls-files``, plus untracked files git does not ignore; without git,
the project folders are walked) is checked for:

- absolute paths of a particular machine (home folders, mount points, build folders);
- references to files that live outside the repository (a sibling ``shared`` folder and the
  specification files that were kept there);
- in ``docs/`` and ``README.md``: markdown links to repository files that do not exist, to
  headings that do not exist (``file.md#anchor``), and plain-text mentions of ``docs/<name>.md``
  anywhere in the tree that name no existing page.

Each failure lists ``file:line`` of every hit. The patterns are assembled from pieces so that this
file does not match them itself.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Folders and files walked when git is not available.
FALLBACK_ROOTS: tuple[str, ...] = (
    "src",
    "tests",
    "docs",
    "scripts",
    "configs",
    ".ci",
    "README.md",
    "pyproject.toml",
)
#: Folder names never walked in the fallback.
SKIP_DIRS = frozenset({".git", ".venv", ".venv-ci", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
#: Files larger than this are data, not text to check.
MAX_BYTES = 2_000_000

_SEP = "/"
_NOT_INSIDE_A_WORD = r"(?<![\w.:/~$-])"
MACHINE_PATHS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("home folder", re.compile(_NOT_INSIDE_A_WORD + _SEP + "home" + _SEP + r"[\w.-]+")),
    ("home folder (macOS)", re.compile(_NOT_INSIDE_A_WORD + _SEP + "[Uu]sers" + _SEP + r"[\w.-]+")),
    ("root's home folder", re.compile(_NOT_INSIDE_A_WORD + _SEP + "root" + _SEP)),
    ("build machine folder", re.compile(_NOT_INSIDE_A_WORD + _SEP + "work" + _SEP)),
    ("mount point", re.compile(_NOT_INSIDE_A_WORD + _SEP + "mnt" + _SEP + r"\w")),
    ("Windows home folder", re.compile(r"[A-Za-z]:\\+" + "Users" + r"\\+", re.IGNORECASE)),
)
OUTSIDE_REFERENCES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("sibling shared folder", re.compile(re.escape(".." + _SEP + "shared"))),
    *(
        (f"file outside the repository ({name}.md)", re.compile(r"\b" + name + r"\.md\b"))
        for name in ("METH" + "OD", "PROTO" + "COLS", "STY" + "LE")
    ),
)
MARKDOWN_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
DOC_MENTION = re.compile(r"(?<![\w./-])docs/[\w.-]+\.md\b")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def _git_files() -> list[Path] | None:
    """Tracked files plus untracked files git does not ignore; None when git cannot list them."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        out = subprocess.run(
            [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n for n in out.decode("utf-8", errors="surrogateescape").split("\0") if n]
    return [ROOT / n for n in names] if names else None


def _walked_files() -> list[Path]:
    found: list[Path] = []
    for name in FALLBACK_ROOTS:
        top = ROOT / name
        if top.is_file():
            found.append(top)
        elif top.is_dir():
            found += [p for p in top.rglob("*") if p.is_file() and not SKIP_DIRS.intersection(p.parts)]
    return found


def _read_text(path: Path) -> str | None:
    """The file's text, or None for links, folders, missing, large or binary files."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@functools.cache
def _text_files() -> dict[str, str]:
    """Relative path -> text of every file to check (read once per test session)."""
    files = _git_files()
    if files is None:
        files = _walked_files()
    out: dict[str, str] = {}
    for path in sorted(set(files)):
        text = _read_text(path)
        if text is not None:
            out[path.relative_to(ROOT).as_posix()] = text
    return out


def _hits(texts: dict[str, str], patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> list[str]:
    hits = []
    for rel, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in patterns:
                match = pattern.search(line)
                if match is not None:
                    hits.append(f"{rel}:{number}: {what}: {match.group(0)!r}")
    return hits


def _markdown_files(texts: dict[str, str]) -> dict[str, str]:
    return {
        rel: t for rel, t in texts.items() if rel == "README.md" or (rel.startswith("docs/") and rel.endswith(".md"))
    }


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match is None:
            continue
        slug = _slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _link_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, target)`` of every markdown link outside fenced code blocks."""
    out = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out += [(number, m.group(1)) for m in MARKDOWN_LINK.finditer(line)]
    return out


def _broken_links(texts: dict[str, str]) -> list[str]:
    broken = []
    for rel, text in _markdown_files(texts).items():
        folder = (ROOT / rel).parent
        for number, target in _link_lines(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:, ...
                continue
            path_part, _, anchor = target.partition("#")
            dest = (folder / path_part).resolve() if path_part else (ROOT / rel).resolve()
            if path_part.startswith("/") or not dest.is_relative_to(ROOT):
                broken.append(f"{rel}:{number}: link outside the repository: {target!r}")
            elif not dest.exists():
                broken.append(f"{rel}:{number}: link to a missing file: {target!r}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{rel}:{number}: link to a missing heading: {target!r}")
    return broken


def _missing_doc_mentions(texts: dict[str, str]) -> list[str]:
    missing = []
    for rel, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in DOC_MENTION.finditer(line):
                if not (ROOT / match.group(0)).is_file():
                    missing.append(f"{rel}:{number}: names a page that does not exist: {match.group(0)!r}")
    return missing


def test_the_walk_sees_the_repository() -> None:
    found = _text_files()
    for rel in (
        "README.md",
        "pyproject.toml",
        "src/tcsa_uda/__init__.py",
        "docs/method.md",
        "tests/test_self_contained.py",
    ):
        assert rel in found, f"{rel} was not among the {len(found)} files checked"


def test_no_absolute_machine_paths() -> None:
    hits = _hits(_text_files(), MACHINE_PATHS)
    assert not hits, "absolute paths of a machine (use arguments or environment variables):\n" + "\n".join(hits)


def test_no_references_outside_the_repository() -> None:
    hits = _hits(_text_files(), OUTSIDE_REFERENCES)
    assert not hits, "references to files outside the repository (point to docs/ instead):\n" + "\n".join(hits)


def test_markdown_links_resolve() -> None:
    broken = _broken_links(_text_files())
    assert not broken, "broken links in the documentation:\n" + "\n".join(broken)


def test_mentioned_doc_pages_exist() -> None:
    missing = _missing_doc_mentions(_text_files())
    assert not missing, "mentions of documentation pages that do not exist:\n" + "\n".join(missing)


def test_checks_see_planted_violations() -> None:
    """The checkers themselves: each planted violation is found, with its line number."""
    sample = {
        "a.py": "x = 1\ndata = '" + _SEP + "home" + _SEP + "alice/data'\n",
        "b.md": "see ../" + "shared/" + "METH" + "OD.md\n",
        "c.txt": "C:\\" + "Users\\bob\\x and $HOME/ok and https://example.org/home/ok\n",
    }
    machine = _hits(sample, MACHINE_PATHS)
    assert [h.split(": ")[0] for h in machine] == ["a.py:2", "c.txt:1"]
    outside = _hits(sample, OUTSIDE_REFERENCES)
    assert [h.split(": ")[0] for h in outside] == ["b.md:1", "b.md:1"]
    assert _slug("Units, variants, policies: defaults and `--parity sifa`") == (
        "units-variants-policies-defaults-and---parity-sifa"
    )
    assert _anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}
    assert _link_lines("[x](y.md)\n```\n[z](w.md)\n```\n") == [(1, "y.md")]
