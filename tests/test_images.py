"""`Run.image` on a core-only install: numpy is optional, so nested lists and PIL images must not need it."""

import json
import subprocess
import sys
import textwrap

import pytest

from runforge.run.images import to_pil

CASES = [
    [[0.0, 0.5], [1.0, 2.0]],                                   # HxW floats, clipped
    [[0, 255], [1, -1]],                                        # ints are 0..1 like any non-uint8 input
    [[[0.1, 0.2, 0.3]] * 4] * 2,                                # HxWx3
    [[[0.1, 0.2, 0.3, 1.0]] * 4] * 2,                           # HxWx4
    [[[0.25]] * 3] * 2,                                         # HxWx1 -> HxW
    [[[i / 29 for i in range(5)]] * 6] * 3,                     # CHW -> HWC
    [[float("nan"), float("inf"), -float("inf"), True]],        # NaN is 0, infinities clip
    [[i / 97 for i in range(97)]],                              # every rounding step
]
BAD = [[], [1, 2], [[[[1]]]], [[1, 2], [3]], [[1, [2]], [3, 4]], [["a", "b"]], [[[0.1, 0.2]] * 3] * 2]

# Runs with `import numpy` failing, as on an install without the train or monitor extras.
NO_NUMPY = textwrap.dedent("""
    import json, sys
    sys.modules["numpy"] = None
    from PIL import Image
    import runforge
    from runforge.run.images import to_pil

    cases, bad = json.loads(sys.stdin.read())
    pixels = [[to_pil(c).mode, list(to_pil(c).size), to_pil(c).tobytes().hex()] for c in cases]
    errors = []
    for c in bad:
        try:
            to_pil(c)
            errors.append(None)
        except ValueError as exc:
            errors.append(str(exc))
    with runforge.Run(trainer="t", config={}, root="runs", steps=1) as run:
        written = [run.image(1, "lists", cases[2]), run.image(1, "pil", Image.new("RGB", (3, 2), (9, 8, 7)))]
    print(json.dumps({"pixels": pixels, "errors": errors, "written": [str(p) for p in written]}))
""")


def _no_numpy(tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_NUMPY], input=json.dumps([CASES, BAD]), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_numpy_nested_lists_and_pil_images_are_written(tmp_path):
    from PIL import Image

    result = _no_numpy(tmp_path)
    assert all(error is not None for error in result["errors"])
    lists, pil = (tmp_path / path for path in result["written"])
    with Image.open(lists) as image:
        assert image.mode == "RGB" and image.size == (4, 2) and image.getpixel((0, 0)) == (26, 51, 77)
    with Image.open(pil) as image:
        assert image.size == (3, 2) and image.getpixel((2, 1)) == (9, 8, 7)


def test_without_numpy_the_pixels_match_the_numpy_path(tmp_path):
    pytest.importorskip("numpy")
    result = _no_numpy(tmp_path)
    expected = [[to_pil(c).mode, list(to_pil(c).size), to_pil(c).tobytes().hex()] for c in CASES]
    assert result["pixels"] == expected
    for case in BAD:
        with pytest.raises(ValueError):
            to_pil(case)
