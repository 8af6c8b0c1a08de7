"""Every bad input to `runforge train sr` and `runforge upscale`: one stderr line naming the file or flag,
exit 2, nothing on disk created or changed (a resumed run stays byte-for-byte as it was); and property
tests of the readers of user images: any file either loads or is the project's own error."""

from __future__ import annotations

import io
import itertools
import os
import pickle
import random
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import run_cli, tree_digest, write_file
from runforge.errors import RunforgeError
from runforge.trainers.sr.data import load_image, load_split
from runforge.trainers.sr.losses import load_vgg_features

TINY = ["train", "sr", "--preset", "tiny", "--no_tensorboard", "--progress", "lines"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data: a forged huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_bytes(size: int, seed: int = 0, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def data_root(w: Path, **extra: bytes) -> None:
    """w/data/train/a.png and w/data/val/b.png (64 px), plus `extra` files by relative name."""
    write_file(w / "data" / "train" / "a.png", image_bytes(64, 1))
    write_file(w / "data" / "val" / "b.png", image_bytes(64, 2))
    for name, content in extra.items():
        write_file(w / "data" / name.replace("__", "/"), content)


def vgg(**override: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {"features.0.weight": torch.zeros(4, 3, 3, 3), "features.0.bias": torch.zeros(4),
             "features.2.weight": torch.zeros(4, 4, 3, 3), "features.2.bias": torch.zeros(4)}
    return {**state, **override}


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def edit_checkpoint(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    path.write_bytes(saved(state))


def last(w: Path) -> Path:
    return w / "run" / "ckpts" / "last.pt"


def best(w: Path) -> Path:
    return w / "run" / "ckpts" / "best.pt"


class Exploit:
    """A pickle that runs a command when loaded without weights_only: loading it must refuse, not run it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


# (id, how to prepare the case in `w` (holding a copy of a finished tiny run in w/run and w/ok.png),
#  the arguments, the words the one stderr line must hold)
TRAIN_CASES = [
    ("lr-huge", None, ["--lr", "1e308"], ["--lr", "<= 1"]),
    ("lr-zero", None, ["--lr", "0"], ["--lr", "> 0"]),
    ("lr-nan", None, ["--lr", "nan"], ["--lr", "finite"]),
    ("steps-zero", None, ["--steps", "0"], ["--steps", ">= 1"]),
    ("steps-huge", None, ["--steps", str(10**12)], ["--steps", "<= 1e+09"]),
    ("batch-huge", None, ["--batch_size", "100000000"], ["--batch_size", "<= 1024"]),
    ("patch-huge", None, ["--patch_size", "1000000"], ["--patch_size", "<= 1024"]),
    ("val-crop-below-ssim-window", None, ["--val_crop", "8"], ["--val_crop", ">= 16"]),
    ("noise-above-one", None, ["--noise", "2"], ["--noise", "<= 1"]),
    ("weight-negative", None, ["--weight_l1", "-1"], ["--weight_l1", ">= 0"]),
    ("seed-negative", None, ["--seed", "-1"], ["--seed", ">= 0"]),
    ("trend-window-too-short", None, ["--trend_window", "1"], ["--trend_window", ">= 4"]),
    ("min-lr-above-lr", None, ["--min_lr", "0.5"], ["--min_lr", "above --lr"]),
    ("blur-wider-than-patch", None, ["--blur", "9"], ["--blur", "border", "--patch_size 16"]),
    ("device-cuda", None, ["--device", "cuda"], ["--device cuda", "no CUDA device"]),
    ("data-missing", None, ["--data_root", "nowhere"], ["nowhere", "no such data directory"]),
    ("data-is-a-file", lambda w: write_file(w / "afile", "x"), ["--data_root", "afile"], ["afile", "is not a directory"]),
    ("data-random-bytes", lambda w: data_root(w, **{"train__noise.png": os.urandom(3000)}),
     ["--data_root", "data"], ["noise.png", "cannot be read as an image"]),
    ("data-truncated-png", lambda w: data_root(w, **{"val__cut.png": image_bytes(64)[:300]}),
     ["--data_root", "data"], ["cut.png", "cannot be decoded"]),
    ("data-truncated-jpeg", lambda w: data_root(w, **{"train__cut.jpg": image_bytes(64, fmt="JPEG")[:1500]}),
     ["--data_root", "data"], ["cut.jpg", "cannot be decoded"]),
    ("data-text-named-jpg", lambda w: data_root(w, **{"train__notes.jpg": b"shopping list\n"}),
     ["--data_root", "data"], ["notes.jpg", "cannot be read as an image"]),
    ("data-forged-huge-image", lambda w: data_root(w, **{"train__huge.png": png_header(50000, 50000)}),
     ["--data_root", "data"], ["huge.png", "2,500,000,000 pixels", "MAX_IMAGE_PIXELS"]),
    ("data-over-the-ceiling", lambda w: data_root(w, **{"train__big.png": png_header(9000, 9000)}),
     ["--data_root", "data"], ["big.png", "9000x9000", "more than the 67,108,864 allowed"]),
    ("data-too-small", lambda w: data_root(w, **{"train__small.png": image_bytes(8)}),
     ["--data_root", "data"], ["small.png", "is 8x8 pixels"]),
    ("data-no-val", lambda w: (data_root(w), shutil.rmtree(w / "data" / "val")), ["--data_root", "data"],
     ["data/val", "missing"]),
    ("data-empty-val", lambda w: (data_root(w), (w / "data" / "val" / "b.png").unlink()), ["--data_root", "data"],
     ["data/val", "holds no PNG or JPEG images"]),
    ("perceptual-missing", None, ["--perceptual_weights", "vgg.pth"], ["vgg.pth", "no such file"]),
    ("perceptual-random-bytes", lambda w: write_file(w / "vgg.pth", os.urandom(2000)), ["--perceptual_weights", "vgg.pth"],
     ["vgg.pth", "cannot be loaded"]),
    ("perceptual-truncated", lambda w: write_file(w / "vgg.pth", saved(vgg())[:500]), ["--perceptual_weights", "vgg.pth"],
     ["vgg.pth", "cannot be loaded", "PytorchStreamReader"]),
    ("perceptual-wrong-keys", lambda w: write_file(w / "vgg.pth", saved({"conv.weight": torch.zeros(1)})),
     ["--perceptual_weights", "vgg.pth"], ["vgg.pth", "features.N.weight"]),
    ("perceptual-channels-do-not-chain",
     lambda w: write_file(w / "vgg.pth", saved(vgg(**{"features.2.weight": torch.zeros(4, 5, 3, 3)}))),
     ["--perceptual_weights", "vgg.pth"], ["vgg.pth", "features.2.weight", "(4, 4, k, k)"]),
    ("learn-dir-under-a-file", lambda w: write_file(w / "afile", "x"), ["--learn_dir", "{w}/afile/Learn"],
     ["afile/Learn", "cannot be made", "--learn_dir"]),
    ("resume-truncated", lambda w: write_file(last(w), last(w).read_bytes()[:200]), ["--resume", "run"],
     ["last.pt", "cannot be loaded", "PytorchStreamReader"]),
    ("resume-random-bytes", lambda w: write_file(last(w), os.urandom(3000)), ["--resume", "run"],
     ["last.pt", "cannot be loaded"]),
    ("resume-empty", lambda w: write_file(last(w), b""), ["--resume", "run"], ["last.pt", "cannot be loaded"]),
    ("resume-wrong-keys", lambda w: write_file(last(w), saved({"weights": torch.zeros(3)})), ["--resume", "run"],
     ["last.pt", "not a resumable sr checkpoint"]),
    ("resume-another-trainers-checkpoint",
     lambda w: write_file(last(w), saved({"epoch": 4, "score": {"w": torch.zeros(2)}, "best": 0.5})), ["--resume", "run"],
     ["last.pt", "not a resumable sr checkpoint"]),
    ("resume-plain-pickle", lambda w: write_file(last(w), pickle.dumps({"params": {"a": 1.0}, "rng": random.getstate()})),
     ["--resume", "run"], ["last.pt", "cannot be loaded"]),  # torch warns about the protocol: not a second line
    ("resume-pickle-that-runs-code", lambda w: write_file(last(w), saved({"model": Exploit()})),
     ["--resume", "run"], ["last.pt", "cannot be loaded", "GLOBAL posix.system"]),
    ("resume-another-config", None, ["--resume", "run", "--channels", "16"], ["last.pt", "size mismatch"]),
    ("resume-perceptual-added", lambda w: write_file(w / "vgg.pth", saved(vgg())),
     ["--resume", "run", "--perceptual_weights", "vgg.pth"], ["last.pt", "adaptive weights", "perceptual"]),
    ("resume-moment-of-another-shape",
     lambda w: edit_checkpoint(last(w), lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(2))),
     ["--resume", "run"], ["last.pt", "optimizer state 'exp_avg' of parameter 0 has shape (2,)"]),
    ("resume-rng-damaged", lambda w: edit_checkpoint(last(w), lambda s: s["rng"].update(data=torch.zeros(3, dtype=torch.uint8))),
     ["--resume", "run"], ["last.pt", "cannot be loaded", "RuntimeError"]),
    ("resume-counter-negative", lambda w: edit_checkpoint(last(w), lambda s: s["adaptive"].update(plateau_counter=-1)),
     ["--resume", "run"], ["last.pt", "plateau_counter"]),
]

UPSCALE_CASES = [
    ("model-missing", None, ["nowhere.pt", "ok.png"], ["nowhere.pt", "no such sr checkpoint"]),
    ("model-random-bytes", lambda w: write_file(best(w), os.urandom(3000)), ["run", "ok.png"],
     ["best.pt", "is not an sr checkpoint"]),
    ("model-truncated", lambda w: write_file(best(w), best(w).read_bytes()[:300]), ["run", "ok.png"],
     ["best.pt", "is not an sr checkpoint", "PytorchStreamReader"]),
    ("model-wrong-keys", lambda w: write_file(best(w), saved({"weights": torch.zeros(2)})), ["run", "ok.png"],
     ["best.pt", "is not an sr checkpoint"]),
    ("model-config-damaged", lambda w: edit_checkpoint(best(w), lambda s: s["config"].update(channels="many")),
     ["run", "ok.png"], ["best.pt", "is not an sr checkpoint", "channels"]),
    ("model-of-another-shape", lambda w: edit_checkpoint(best(w), lambda s: s["config"].update(channels=16)),
     ["run", "ok.png"], ["best.pt", "is not an sr checkpoint", "size mismatch"]),
    ("image-missing", None, ["run", "nope.png"], ["nope.png", "no such image file"]),
    ("image-random-bytes", lambda w: write_file(w / "noise.png", os.urandom(3000)), ["run", "ok.png", "noise.png"],
     ["noise.png", "cannot be read as an image"]),
    ("image-truncated", lambda w: write_file(w / "cut.png", image_bytes(64)[:300]), ["run", "ok.png", "cut.png"],
     ["cut.png", "cannot be decoded"]),
    ("image-forged-huge", lambda w: write_file(w / "huge.png", png_header(50000, 50000)), ["run", "huge.png"],
     ["huge.png", "2,500,000,000 pixels", "--max_pixels 16777216 for the x2 result"]),
    ("result-too-large", lambda w: write_file(w / "wide.png", image_bytes(300)), ["run", "wide.png", "--max_pixels", "100000"],
     ["wide.png", "300x300", "more than the 25,000 allowed", "--max_pixels 100000"]),
    ("max-pixels-zero", None, ["run", "ok.png", "--max_pixels", "0"], ["--max_pixels", "between 1 and"]),
    ("max-pixels-text", None, ["run", "ok.png", "--max_pixels", "lots"], ["--max_pixels", "expected an integer"]),
    ("output-is-a-file", lambda w: write_file(w / "afile", "x"), ["run", "ok.png", "-o", "afile"],
     ["afile", "is not a folder", "-o"]),
    ("output-parent-is-a-file", lambda w: write_file(w / "afile", "x"), ["run", "ok.png", "-o", "afile/out"],
     ["afile/out", "cannot be made: afile is not a folder"]),
    ("result-name-is-a-folder", lambda w: (w / "out" / "ok_x2.png").mkdir(parents=True), ["run", "ok.png", "-o", "out"],
     ["out/ok_x2.png", "is in the way"]),
    ("two-inputs-one-result", lambda w: write_file(w / "other" / "ok.png", image_bytes(20)),
     ["run", "ok.png", "other/ok.png", "-o", "out"], ["other/ok.png", "would write out/ok_x2.png, as ok.png does"]),
    ("device-cuda", None, ["run", "ok.png", "--device", "cuda"], ["--device cuda", "no CUDA device"]),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    result = run_cli(*TINY, "--steps", "4", "--out", base / "run", cwd=base)
    assert result.returncode == 0, result.stderr
    write_file(base / "ok.png", image_bytes(20))
    return base


def _cases(cases):
    marks = lambda case: [NO_CUDA] if "cuda" in case[0] else []  # noqa: E731
    return [pytest.param(*case[1:], id=case[0], marks=marks(case)) for case in cases]


@pytest.mark.parametrize("prepare, args, needles", _cases(TRAIN_CASES))
def test_train_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    _refuses(tmp_path, finished_run, prepare, [*TINY, *args], needles)


@pytest.mark.parametrize("prepare, args, needles", _cases(UPSCALE_CASES))
def test_upscale_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    _refuses(tmp_path, finished_run, prepare, ["upscale", *args], needles)


def _refuses(work: Path, finished: Path, prepare, args: list[str], needles: list[str]) -> None:
    shutil.copytree(finished, work, dirs_exist_ok=True, symlinks=True)
    if prepare is not None:
        prepare(work)
    before = tree_digest(work)
    result = run_cli(*[a.replace("{w}", str(work)) for a in args], cwd=work)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree_digest(work) == before  # no run directory, no output, the resumed run untouched, no "pwned"


# ---------------------------------------------------------------------- property tests of the readers

_counter = itertools.count()
MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "I", "I;16", "F", "CMYK", "YCbCr", "HSV")
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def _fresh(root: Path, name: str) -> Path:
    # a new folder per example: the decoded-image cache is keyed by path, mtime and size
    folder = root / f"case{next(_counter)}"
    folder.mkdir()
    return folder / name


@st.composite
def image_files(draw) -> bytes:
    """A small image of a random mode, size and format, possibly truncated or with flipped bytes."""
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode) if mode not in ("I", "I;16", "F") else \
        Image.fromarray(pixels[..., 0].astype(np.int32 if mode == "I" else np.uint16 if mode == "I;16" else np.float32))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=draw(st.sampled_from(FORMATS)))
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO(image_bytes(8, seed))  # a format that cannot hold this mode: any valid file will do
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(("none", "truncate", "flip")))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(image_files(), st.binary(max_size=600),
                      st.builds(png_header, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))),
       min_size=st.integers(1, 24))
def test_an_image_file_either_loads_as_rgb_or_is_a_named_error(tmp_path, data, min_size):
    path = _fresh(tmp_path, "image.png")
    path.write_bytes(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pixels = load_image(path, min_size)
    except RunforgeError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    finally:
        assert not caught, [str(w.message) for w in caught]  # a warning would be a second line on stderr
    assert pixels.dtype == torch.uint8 and pixels.shape[0] == 3 and min(pixels.shape[1:]) >= min_size
    assert pixels.shape[1] * pixels.shape[2] <= 2**26


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.tuples(st.sampled_from(("", "train/", "val/", ".hidden/", "train/sub/")),
                                 st.sampled_from(("a.png", "b.jpg", "c.JPEG", "d.txt", ".e.png", "f.png")),
                                 st.one_of(image_files(), st.binary(max_size=64), st.just(None))),
                       max_size=8))
def test_a_data_root_either_loads_or_is_a_named_error(tmp_path, layout):
    root = _fresh(tmp_path, "data")
    root.mkdir()
    for folder, name, content in layout:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            continue
        if content is None:
            path.mkdir()  # a folder named like an image
        else:
            path.write_bytes(content)
    try:
        train, val, found = load_split(root, 4, 4)
    except RunforgeError as exc:
        assert str(root) in str(exc) and "\n" not in str(exc)
        return
    assert found == root and train and val
    assert all(img.dtype == torch.uint8 and img.shape[0] == 3 and min(img.shape[1:]) >= 4 for img in train + val)


@st.composite
def vgg_states(draw):
    """A VGG-like state dict (a chain of convolutions, torchvision numbering), maybe with one thing wrong."""
    state, index, channels = {}, 0, 3
    for _ in range(draw(st.integers(1, 5))):
        out, kernel = draw(st.integers(1, 4)), draw(st.sampled_from((1, 3)))
        state[f"features.{index}.weight"] = torch.rand(out, channels, kernel, kernel)
        state[f"features.{index}.bias"] = torch.rand(out)
        index, channels = index + draw(st.sampled_from((2, 3))), out  # a gap of 3: a pooling layer between
    first = "features.0.weight"
    damage = draw(st.sampled_from(("none", "none", "bias", "channels", "even", "dtype", "dims", "batchnorm",
                                   "key", "value")))
    if damage == "bias":
        del state["features.0.bias"]
    elif damage == "channels":
        state[first] = torch.rand(2, 5, 3, 3)
    elif damage == "even":
        state[first] = torch.rand(state[first].shape[0], 3, 2, 2)
    elif damage == "dtype":
        state[first] = state[first].to(torch.int64)
    elif damage == "dims":
        state[first] = state[first][0]
    elif damage == "batchnorm":
        state["features.1.running_mean"] = torch.zeros(3)
    elif damage == "key":
        state[7] = torch.zeros(1)
    elif damage == "value":
        state[first] = "weights"
    return {"state_dict": state} if draw(st.booleans()) else state


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=vgg_states())
def test_perceptual_weights_either_build_a_network_that_runs_or_are_a_named_error(tmp_path, state):
    path = _fresh(tmp_path, "vgg.pth")
    torch.save(state, path)
    try:
        features = load_vgg_features(path)
    except RunforgeError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    outputs = features(torch.rand(1, 3, 16, 16))  # what the perceptual loss does with it
    assert outputs and all(o.shape[0] == 1 for o in outputs)
