"""Every bad input to `runforge train voxel`, `runforge data render-views` and `runforge export`: one stderr
line naming the flag or file, exit 2, no traceback, and nothing on disk created or changed (no run
directory, no dataset or export folder, a run given to --resume byte-for-byte as it was)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import png_header, run_cli, tree_digest, write_file

torch = pytest.importorskip("torch")

SAMPLE = Path(__file__).resolve().parents[2] / "runforge" / "trainers" / "voxel" / "sample"
TRAIN = ["train", "voxel", "--no_tensorboard", "--progress", "lines"]
RESUME = [*TRAIN, "--out", "run", "--resume"]
CHECKPOINT = Path("run") / "ckpts" / "ckpt_6_rank0.pt"  # the last of the tiny preset's 6 steps


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("voxel_base")
    result = run_cli(*TRAIN, "--preset", "tiny", "--out", "run", cwd=base)
    assert result.returncode == 0, result.stderr
    assert (base / CHECKPOINT).is_file()
    return base / "run"


def _map(w: Path, text: str | bytes, map_id: int = 2) -> None:
    write_file(w / "maps" / str(map_id) / "map.json", text)


def _cameras(w: Path, change: Callable[[dict[str, Any]], Any], images: bool = True, text: str | None = None) -> None:
    """datasets/2: a copy of the bundled dataset with its cameras.json changed by `change` (or replaced by `text`)."""
    shutil.copytree(SAMPLE / "dataset1", w / "datasets" / "2")
    doc = json.loads((SAMPLE / "dataset1" / "cameras.json").read_text())
    change(doc)
    write_file(w / "datasets" / "2" / "cameras.json", json.dumps(doc) if text is None else text)
    if not images:
        shutil.rmtree(w / "datasets" / "2" / "images")


def _reference(w: Path, data: bytes) -> None:
    shutil.copytree(SAMPLE / "dataset1", w / "datasets" / "2")
    write_file(w / "datasets" / "2" / "images" / "0003.png", data)


def _edit_checkpoint(w: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    state = torch.load(w / CHECKPOINT, weights_only=True)
    edit(state)
    torch.save(state, w / CHECKPOINT)


def _set(container: dict[str, Any], key: str, value: Any) -> None:
    container[key] = value


def _model_without_vae(w: Path) -> None:
    write_file(w / "model" / "unet" / "config.json", "{}")


def _nothing(w: Path) -> None:
    pass


def _without_cuda(w: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

# (id, how to prepare the case in `w` (holding a copy of a finished tiny run in w/run), the arguments,
#  the words the one stderr line must hold)
CASES: list[tuple[str, Callable[[Path], Any], list[Any], list[str]]] = [
    # flags: every number has a range, and cross-field rules
    ("steps-zero", _nothing, [*TRAIN, "--steps", "0"], ["--steps", ">= 1"]),
    ("steps-huge", _nothing, [*TRAIN, "--steps", "100000000"], ["--steps", "<="]),
    ("lr-huge", _nothing, [*TRAIN, "--lr", "1e308"], ["--lr", "<= 10"]),
    ("lr-nan", _nothing, [*TRAIN, "--lr", "nan"], ["--lr", "finite"]),
    ("keep-last-negative", _nothing, [*TRAIN, "--keep_last", "-1"], ["--keep_last", ">= 0"]),
    ("resolution-huge", _nothing, [*TRAIN, "--resolution", "100000"], ["--resolution", "<= 4096"]),
    ("threshold-one", _nothing, [*TRAIN, "--threshold", "1"], ["--threshold", "< 1"]),
    ("seed-negative", _nothing, [*TRAIN, "--seed", "-1"], ["--seed", ">= 0"]),
    ("threads-huge", _nothing, [*TRAIN, "--threads", "100000"], ["--threads", "<="]),
    ("dataset-id-negative", _nothing, [*TRAIN, "--dataset_id", "-3"], ["--dataset_id", ">= 0"]),
    ("t-min-above-t-max", _nothing, [*TRAIN, "--t_min", "0.6", "--t_max_end", "0.5"], ["--t_min", "below"]),
    ("config-lr-huge", lambda w: write_file(w / "c.json", '{"lr": 1e300}'), [*TRAIN, "--config", "c.json"],
     ["c.json", "lr", "<= 10"]),
    ("device-cuda", _without_cuda, [*TRAIN, "--device", "cuda"], ["--device cuda", "no CUDA"]),
    ("sds-without-model", _nothing, [*TRAIN, "--prompt", "a castle"], ["--model_path is missing"]),
    ("sds-model-not-a-folder", _nothing, [*TRAIN, "--prompt", "x", "--model_path", "nowhere"],
     ["nowhere", "not a diffusers model folder"]),
    ("sds-model-without-vae", _model_without_vae, [*TRAIN, "--prompt", "x", "--model_path", "model"],
     ["model", "no vae/"]),
    # map.json
    ("map-nan", lambda w: _map(w, '{"worldConfig": {"blockSize": NaN}, "blocks": []}'), [*TRAIN, "--map_id", "2"],
     ["maps/2/map.json", "NaN"]),
    ("map-infinity", lambda w: _map(w, '{"worldConfig": {"size": [4, 4, Infinity]}, "blocks": []}'),
     [*TRAIN, "--map_id", "2"], ["maps/2/map.json", "Infinity"]),
    ("map-1e400", lambda w: _map(w, '{"blocks": [], "metadata": {"seed": 1e400}}'), [*TRAIN, "--map_id", "2"],
     ["maps/2/map.json", "1e400"]),
    ("map-position-1e20", lambda w: _map(w, '{"worldConfig": {"size": [4, 4, 4]}, '
                                            '"blocks": [{"position": [1e20, 0, 0], "blockType": "Stone"}]}'),
     [*TRAIN, "--map_id", "2"], ["maps/2/map.json", "blocks[0]", "outside"]),
    ("map-block-size-1e20", lambda w: _map(w, '{"worldConfig": {"blockSize": 1e20}, "blocks": []}'),
     [*TRAIN, "--map_id", "2"], ["maps/2/map.json", "blockSize"]),
    ("map-grid-huge", lambda w: _map(w, '{"worldConfig": {"size": [100000, 100000, 100000]}, "blocks": []}'),
     [*TRAIN, "--map_id", "2"], ["maps/2/map.json", "too large", "256^3"]),
    ("map-deep", lambda w: _map(w, "[" * 100_000 + "]" * 100_000), [*TRAIN, "--map_id", "2"],
     ["maps/2/map.json", "nests too deeply"]),
    ("map-not-utf8", lambda w: _map(w, b'{"blocks": [], "x": "\xff"}'),
     [*TRAIN, "--map_id", "2"], ["maps/2/map.json", "not valid JSON"]),
    ("map-metadata-not-object", lambda w: _map(w, '{"blocks": [], "metadata": 5}'), [*TRAIN, "--map_id", "2"],
     ["maps/2/map.json", "metadata"]),
    ("map-missing", _nothing, [*TRAIN, "--map_id", "9"], ["maps/9/map.json", "no such map"]),
    # datasets/{id}/: cameras.json and the reference views
    ("dataset-missing", _nothing, [*TRAIN, "--dataset_id", "7"], ["datasets/7", "no such dataset"]),
    ("camera-200000-pixels-wide", lambda w: _cameras(w, lambda d: _set(d["views"][0], "width", 200_000)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/cameras.json", "views[0]", "16,777,216"]),
    ("camera-nan-matrix", lambda w: _cameras(w, lambda d: _set(d["views"][1], "view", [[float("nan")] * 4] * 4)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/cameras.json", "views[1].view", "finite"]),
    ("camera-singular", lambda w: _cameras(w, lambda d: _set(d["views"][2], "proj", [[0] * 4] * 4)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/cameras.json", "views[2]", "singular"]),
    ("cameras-too-many", lambda w: _cameras(w, lambda d: _set(d, "views", [0] * 10_001)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/cameras.json", "10,001 views"]),
    ("cameras-corrupt", lambda w: _cameras(w, lambda d: None, text="{"),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/cameras.json", "not valid JSON"]),
    ("reference-views-missing", lambda w: _cameras(w, lambda d: None, images=False),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["0000.png", "needs a reference image"]),
    ("reference-view-truncated", lambda w: _reference(w, (SAMPLE / "dataset1/images/0003.png").read_bytes()[:300]),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/images/0003.png", "cannot be decoded"]),
    ("reference-view-random-bytes", lambda w: _reference(w, os.urandom(2000)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/images/0003.png", "cannot be read as an image"]),
    ("reference-view-bomb", lambda w: _reference(w, png_header(20_000, 20_000)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/images/0003.png", "400,000,000 pixels"]),
    ("reference-view-oversized", lambda w: _reference(w, png_header(5000, 5000)),
     [*TRAIN, "--dataset_id", "2", "--map_id", "1"], ["datasets/2/images/0003.png", "16,777,216 allowed"]),
    # the registry the export at the end goes to
    ("registry-is-a-file", lambda w: write_file(w / "afile", "x"), [*TRAIN, "--registry", "afile"],
     ["afile", "not a folder", "--registry"]),
    ("registry-json-damaged", lambda w: write_file(w / "maps" / "registry.json", "{"), TRAIN,
     ["maps/registry.json", "not valid JSON"]),
    # --resume: the checkpoint is checked before the run is touched
    ("resume-checkpoint-truncated", lambda w: write_file(w / CHECKPOINT, (w / CHECKPOINT).read_bytes()[:200]), RESUME,
     ["ckpt_6_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-random-bytes", lambda w: write_file(w / CHECKPOINT, os.urandom(3000)), RESUME,
     ["ckpt_6_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-empty", lambda w: write_file(w / CHECKPOINT, b""), RESUME, ["ckpt_6_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-pickle", lambda w: write_file(w / CHECKPOINT, pickle.dumps({"weights": [1]})), RESUME,
     ["ckpt_6_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-of-another-trainer",
     lambda w: torch.save({"step": 3, "splats": {"means": torch.zeros(2, 3)}}, w / CHECKPOINT), RESUME,
     ["ckpt_6_rank0.pt", "not a voxel checkpoint"]),
    ("resume-checkpoint-wrong-grid",
     lambda w: _edit_checkpoint(w, lambda s: _set(s["grid"], "occupancy_logits", torch.zeros(3, 3, 3))), RESUME,
     ["ckpt_6_rank0.pt", "grid.occupancy_logits", "(32, 24, 32)"]),
    ("resume-checkpoint-nan-grid",
     lambda w: _edit_checkpoint(w, lambda s: s["grid"]["material_logits"].fill_(float("nan"))), RESUME,
     ["ckpt_6_rank0.pt", "grid.material_logits", "NaN"]),
    ("resume-checkpoint-wrong-optimizer",
     lambda w: _edit_checkpoint(w, lambda s: _set(s["optimizer"]["state"][0], "exp_avg", torch.zeros(3))), RESUME,
     ["ckpt_6_rank0.pt", "optimizer", "exp_avg"]),
    ("resume-checkpoint-bad-generator", lambda w: _edit_checkpoint(w, lambda s: _set(s, "generator", torch.zeros(3))),
     RESUME, ["ckpt_6_rank0.pt", "generator"]),
    ("resume-source-map-changed",
     lambda w: _map(w, '{"worldConfig": {"size": [8, 8, 8]}, "blocks": []}', map_id=1), RESUME,
     ["ckpt_6_rank0.pt", "(32, 24, 32)", "map 1"]),
    # runforge data render-views
    ("render-views-zero", _nothing,
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds", "--views", "0"], ["--views", "0"]),
    ("render-views-resolution-huge", _nothing,
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds", "--resolution", "100000"],
     ["--resolution", "4096"]),
    ("render-views-dataset-huge", _nothing,
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds", "--views", "1000", "--resolution",
      "4096"], ["--views 1000", "for a dataset"]),
    ("render-views-out-is-a-file", lambda w: write_file(w / "afile", "x"),
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "afile"], ["afile", "not a folder", "--out"]),
    ("render-views-out-under-a-file", lambda w: write_file(w / "afile", "x"),
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "afile/ds"], ["afile", "not a folder"]),
    ("render-views-cameras-json-is-a-folder", lambda w: (w / "ds" / "cameras.json").mkdir(parents=True),
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds"], ["ds/cameras.json", "in the way"]),
    ("render-views-map-is-a-folder", lambda w: (w / "adir").mkdir(),
     ["data", "render-views", "--map", "adir", "--out", "ds"], ["adir", "is a directory"]),
    ("render-views-map-nan", lambda w: _map(w, '{"worldConfig": {"size": [NaN, 1, 1]}, "blocks": []}'),
     ["data", "render-views", "--map", "maps/2/map.json", "--out", "ds"], ["maps/2/map.json", "NaN"]),
    ("render-views-cameras-missing", _nothing,
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds", "--cameras", "nope.json"],
     ["nope.json", "no such cameras file"]),
    ("render-views-camera-huge",
     lambda w: write_file(w / "c.json", json.dumps({"views": [{"width": 5000, "height": 5000, "view": [[1, 0, 0, 0]] * 4,
                                                           "proj": [[1, 0, 0, 0]] * 4}]})),
     ["data", "render-views", "--map", SAMPLE / "map1/map.json", "--out", "ds", "--cameras", "c.json"],
     ["c.json", "25,000,000 pixels"]),
    # runforge export
    ("export-registry-is-a-file", lambda w: write_file(w / "afile", "x"),
     ["export", "--training_dir", "run", "--source_map_id", "1", "--registry", "afile"], ["afile", "not a folder"]),
    ("export-registry-json-damaged", lambda w: write_file(w / "maps" / "registry.json", "[1, "),
     ["export", "--training_dir", "run", "--source_map_id", "1"], ["maps/registry.json", "not valid JSON"]),
    ("export-no-training-dir", _nothing, ["export", "--training_dir", "nowhere", "--source_map_id", "1"],
     ["nowhere", "not a training run folder"]),
    ("export-final-map-missing", lambda w: (w / "run" / "final_map.json").unlink(),
     ["export", "--training_dir", "run", "--source_map_id", "1"], ["run/final_map.json", "is missing"]),
    ("export-final-map-corrupt", lambda w: write_file(w / "run" / "final_map.json", '{"blocks": ['),
     ["export", "--training_dir", "run", "--source_map_id", "1"], ["run/final_map.json", "not valid JSON"]),
    ("export-config-corrupt", lambda w: write_file(w / "run" / "config.json", "[1]"),
     ["export", "--training_dir", "run", "--source_map_id", "1"], ["run/config.json", "JSON object"]),
    ("export-source-negative", _nothing, ["export", "--training_dir", "run", "--source_map_id", "-1"],
     ["--source_map_id", "-1"]),
]


@pytest.mark.parametrize("prepare, args, needles", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path: Path, finished_run: Path, prepare: Any,
                                                          args: list[Any], needles: list[str]) -> None:
    shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    prepare(tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree_digest(tmp_path) == before  # no run, dataset or export folder; the resumed run untouched

