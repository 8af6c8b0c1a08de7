"""Rewrite the flags table in docs/<trainer>.md from each trainer's Config: `make docs`.

tests/test_docs.py fails when a page and its Config disagree; this makes them agree.
"""

import importlib
import re
import sys
from pathlib import Path

from runforge.cli import _available_trainers
from runforge.config import markdown_table
from runforge.trainers import TRAINERS

TABLE = re.compile(r"^\| flag \| type \| default \| meaning \|\n(?:\|.*\|\n?)*", re.MULTILINE)


def main() -> int:
    docs = Path(__file__).resolve().parents[1] / "docs"
    for trainer in _available_trainers():
        page = docs / f"{trainer}.md"
        table = markdown_table(importlib.import_module(TRAINERS[trainer] + ".config").Config)
        text = page.read_text(encoding="utf-8") if page.exists() else f"# `{trainer}`\n\n## Flags\n\n"
        new, count = TABLE.subn(lambda _: table, text, count=1)
        if count == 0:
            new = text.rstrip("\n") + "\n\n" + table
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"updated {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
