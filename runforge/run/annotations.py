"""A run's tags and note: {run}/annotations.json, `{"tags": [...], "note": "..."}`.

The user writes them (from the dashboard, or with `write_annotations`), never the trainer, so a
run that has none simply has no file. Tags are short plain words, so that the dashboard's filter
(`tag=baseline`, whitespace between terms) can name each one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from .files import read_json_object, write_json
from .layout import ANNOTATIONS_FILE

MAX_TAGS = 20
MAX_TAG_LENGTH = 32
MAX_NOTE_BYTES = 4096
"""UTF-8 bytes of the note."""

TAG = re.compile(r"^[\w.:+/-]+$")
"""Letters, digits and `_ . : + / -`: no whitespace (the filter splits on it) and no operator characters."""

def check_annotations(data: Any, where: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """`{"tags": [...], "note": "..."}` with its tags in order, each once; BadInputError naming the
    first problem (`where`: the file or request it came from) otherwise. Either field may be left out."""
    if not isinstance(data, dict):
        raise BadInputError(where, 'annotations must be a JSON object {"tags": [...], "note": "..."}')
    unknown = sorted(set(data) - {"tags", "note"})
    if unknown:
        raise BadInputError(where, f'unknown field {unknown[0]!r} in the annotations (only "tags" and "note")')
    tags, note = data.get("tags", []), data.get("note", "")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise BadInputError(where, "tags must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise BadInputError(where, f"at most {MAX_TAGS} tags, not {len(tags)}")
    for tag in tags:
        if not 0 < len(tag) <= MAX_TAG_LENGTH or not TAG.match(tag):
            raise BadInputError(where, f"tag {tag[:MAX_TAG_LENGTH + 8]!r} is not 1-{MAX_TAG_LENGTH} letters, "
                                       "digits or _ . : + / -")
    if not isinstance(note, str):
        raise BadInputError(where, "note must be a string")
    try:
        size = len(note.encode("utf-8"))
    except UnicodeEncodeError:  # "\ud800" in the JSON: a lone surrogate, which no file can hold as UTF-8
        raise BadInputError(where, "the note is not valid Unicode text (a lone surrogate)") from None
    if size > MAX_NOTE_BYTES:
        raise BadInputError(where, f"the note is longer than {MAX_NOTE_BYTES} bytes")
    return {"tags": list(dict.fromkeys(tags)), "note": note}


def read_annotations(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's `{"tags": [...], "note": "..."}`; empty ones when it has no annotations.json.

    Raises:
        BadInputError: the file is damaged or breaks the rules of `check_annotations`.
    """
    path = Path(run_dir) / ANNOTATIONS_FILE
    if not path.exists():
        return {"tags": [], "note": ""}
    return check_annotations(read_json_object(path, "annotations file"), path)


def write_annotations(run_dir: str | os.PathLike[str], tags: list[str], note: str) -> Path:
    """Check and write {run}/annotations.json atomically (the old file stays when the check fails).

    Raises:
        BadInputError: a tag or the note breaks the rules of `check_annotations`.
    """
    checked = check_annotations({"tags": tags, "note": note})
    return write_json(Path(run_dir) / ANNOTATIONS_FILE, checked)
