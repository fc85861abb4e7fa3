"""bench/results.md is written by more than one benchmark: run_matrix.py writes its body (the
full-size latency matrix), and other benchmarks keep their own section in it between HTML comment
markers, e.g. accuracy_table.py's int8 accuracy table. Each writer replaces only its own part."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"
_SECTION = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.S)


def sections(text: str) -> str:
    """Every marked section of ``text``, in order (what a rewrite of the body keeps)."""
    return "".join(m.group(0) for m in _SECTION.finditer(text))


def put_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Section ``name`` of ``path`` replaced by ``body`` (appended when it is not there yet)."""
    block = f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- /section:{name} -->\n"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->\n.*?<!-- /section:{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    path.write_text(text, encoding="utf-8")


def write_body(lines: list[str], path: Path = RESULTS) -> None:
    """The body of ``path`` rewritten, its marked sections kept after it."""
    kept = sections(path.read_text(encoding="utf-8")) if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")
