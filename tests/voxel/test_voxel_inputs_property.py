"""Any map.json or cameras.json a user (or a damaged disk) can give either loads or raises the project's
own error, never anything else: random JSON of any shape, and valid documents with one part replaced
by NaN, an infinity, a huge number, a value of the wrong type or a deep nesting."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runforge.errors import RunforgeError
from runforge.trainers.voxel.dataset import MAX_VIEW_PIXELS, orbit_cameras, read_cameras
from runforge.trainers.voxel.map_io import MAX_SIDE, MAX_VOXELS, PALETTE, parse_map, read_map

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=20)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


nasty = st.one_of(
    json_values,
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e20, 10**30, 2**63, -1, 0, 0.5, 3.0, True,
                     "", "Stone", "Air", [], {}, [1e20, 0, 0], [100_000, 100_000, 100_000], [4, 4, math.inf],
                     [MAX_SIDE + 1, 1, 1], [256, 256, 257], [1, 2], [1.5, 0, 0]]),
    st.integers(min_value=1, max_value=400).map(_nested),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _mutated(doc: Any, data: st.DataObject) -> Any:
    """`doc` with one part (anywhere, the whole included) replaced by a nasty value or deleted."""
    path = data.draw(st.sampled_from(list(_paths(doc))))
    if not path:
        return data.draw(nasty)
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(nasty)
    return doc


@st.composite
def valid_maps(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.lists(st.integers(1, 5), min_size=3, max_size=3))
    cells = draw(st.sets(st.tuples(*(st.integers(0, s - 1) for s in size)), max_size=8))
    blocks = [{"position": list(cell), "blockType": draw(st.sampled_from(PALETTE[1:]))} for cell in sorted(cells)]
    return {"sequence": 1, "worldConfig": {"size": size, "blockSize": draw(st.sampled_from([0.5, 1.0, 2]))},
            "blocks": blocks, "metadata": {"note": draw(st.text(max_size=5))}}


def _check_map(loaded: Any, doc: Any) -> None:
    x, y, z = loaded.size
    assert max(loaded.size) <= MAX_SIDE and x * y * z <= MAX_VOXELS
    assert loaded.occupied.shape == loaded.material.shape == loaded.size
    assert loaded.num_blocks == len(doc["blocks"])
    assert math.isfinite(loaded.block_size) and loaded.block_size > 0
    back = loaded.to_document()
    assert len(back["blocks"]) == loaded.num_blocks


@SETTINGS
@given(st.one_of(valid_maps(), json_values), st.data())
def test_any_map_document_loads_or_is_a_runforge_error(tmp_path: Path, doc: Any, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        doc = _mutated(doc, data)
    try:
        loaded = parse_map(doc, "map.json")
    except RunforgeError:
        pass
    else:
        _check_map(loaded, doc)
    # the same document as a file: JSON's reader adds NaN/Infinity words and nesting limits of its own
    try:
        text = json.dumps(doc)
    except (ValueError, RecursionError):
        return
    path = tmp_path / "map.json"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = read_map(path)
    except RunforgeError as exc:
        assert "map.json" in str(exc) and "\n" not in str(exc)
    else:
        _check_map(loaded, doc)
        assert all(math.isfinite(v) for v in _numbers(json.loads(text)))  # a map that loads holds no NaN


def _numbers(value: Any) -> Iterator[float]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            yield item


raw_texts = st.one_of(
    st.sampled_from(["", "{", "NaN", "[" * 5000, '{"blocks": [' * 3000, '{"blocks": [], "x": 1e400}',
                     '{"blocks": [{"position": [1e400, 0, 0], "blockType": "Stone"}]}']),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@SETTINGS
@given(raw_texts)
def test_any_map_text_loads_or_is_a_runforge_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "map.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        read_map(path)
    except RunforgeError as exc:
        assert "\n" not in str(exc)


VALID_CAMERAS = {"depth": "negative_one_to_one",
                 "views": [c.to_json() for c in orbit_cameras((8.0, 6.0, 8.0), 2, 16)]}


@SETTINGS
@given(st.one_of(st.just(VALID_CAMERAS), json_values), st.data())
def test_any_cameras_document_loads_or_is_a_runforge_error(tmp_path: Path, doc: Any, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        doc = _mutated(doc, data)
    try:
        text = json.dumps(doc)
    except (ValueError, RecursionError):
        return
    path = tmp_path / "cameras.json"
    path.write_text(text, encoding="utf-8")
    try:
        cameras = read_cameras(path)
    except RunforgeError as exc:
        assert "cameras.json" in str(exc) and "\n" not in str(exc)
        return
    assert cameras and len({c.index for c in cameras}) == len(cameras)
    for camera in cameras:
        assert 1 <= camera.width * camera.height <= MAX_VIEW_PIXELS
        with np.errstate(all="ignore"):  # huge but finite entries may overflow on the way
            assert np.isfinite(np.linalg.inv(camera.proj @ camera.view)).all()  # what rendering inverts
