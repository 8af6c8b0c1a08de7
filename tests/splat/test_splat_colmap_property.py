"""Any COLMAP model a user (or a damaged disk) can give either loads or raises the project's own error:
the pure-Python walk of the binary record layout on any bytes, and the whole model read (the walk, then
pycolmap, then the trainer's checks) with one file of a real model damaged."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pycolmap")

from runforge.errors import RunforgeError  # noqa: E402
from runforge.trainers.splat.colmap import MODEL_FILES, RIG_FILES, binary_layout_problem, check_model  # noqa: E402
from runforge.trainers.splat.scene import write_synthetic_scene  # noqa: E402

NAMES = MODEL_FILES + RIG_FILES
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_scene(tmp_path_factory.mktemp("colmap") / "scene", n_images=4, width=16, height=12,
                                 n_points=40)


def _valid(scene: Path, name: str) -> bytes:
    return (scene / "sparse" / "0" / f"{name}.bin").read_bytes()


@SETTINGS
@given(st.sampled_from(NAMES), st.binary(max_size=200))
def test_the_layout_walk_answers_any_bytes(name: str, data: bytes) -> None:
    problem = binary_layout_problem(name, data)
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)


@SETTINGS
@given(st.sampled_from(NAMES), st.data())
def test_a_cut_or_lengthened_file_is_always_refused(scene: Path, name: str, data: st.DataObject) -> None:
    valid = _valid(scene, name)
    assert binary_layout_problem(name, valid) is None
    cut = data.draw(st.integers(0, len(valid) - 1))
    assert binary_layout_problem(name, valid[:cut]) is not None
    assert binary_layout_problem(name, valid + data.draw(st.binary(min_size=1, max_size=9))) is not None


@st.composite
def damage(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    kind = draw(st.sampled_from(["bytes", "word", "double", "cut", "insert"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "bytes":
        data[at:at + 4] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "word":  # counts, ids, sizes: 0, 1, huge, negative
        data[at:at + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 0x7F7F7F7F])))
    elif kind == "double":  # poses, focal lengths, point coordinates: NaN, infinities, 0, negative, huge
        value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e308]))
        data[at:at + 8] = struct.pack("<d", value)
    elif kind == "cut":
        del data[at:]
    else:
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NAMES), st.data())
def test_a_damaged_model_loads_or_is_a_runforge_error(scene: Path, tmp_path: Path, name: str,
                                                      data: st.DataObject) -> None:
    case = tmp_path / "case"
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(scene, case)
    target = case / "sparse" / "0" / f"{name}.bin"
    target.write_bytes(data.draw(damage(target.read_bytes())))
    try:
        _, rec = check_model(case)
    except RunforgeError as exc:
        assert "\n" not in str(exc)
        return
    assert rec.num_reg_images() > 0  # what the trainer relies on from here
    for image_id in rec.reg_image_ids():
        assert np.isfinite(rec.images[image_id].cam_from_world().matrix()).all()
