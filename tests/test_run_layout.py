"""A run directory holds exactly what docs/run-layer.md lists, written by the public API."""

import json
import re

import runforge
from runforge.run import list_snapshots, read_status

from conftest import read_json


def test_run_writes_every_file_of_the_layout(tmp_dir):
    with runforge.Run(trainer="mytrainer", config={"lr": 1e-3, "layers": [1, 2]}, root="runs", steps=3) as run:
        for step in range(1, 4):
            run.log(step, {"loss": 1.0 / step, "losses": {"l1": 0.5 / step}})
            run.poll(step)
        run.image(3, "cam3", [[[255, 0, 0]] * 4] * 3)
        run.snapshot(3, {"total_loss_value": 0.33})
        run.save_json("maps/step_0003.json", {"blocks": []})
    assert re.fullmatch(r"[a-z]+-[a-z]+-1_[a-z0-9]{8}", run.dir.name)
    names = {p.name for p in run.dir.iterdir()}
    assert {"run.json", "config.json", "train.jsonl", "status.json", "events.log", "tb", "control",
            "images", "stats", "maps"} <= names

    info = read_json(run.dir / "run.json")
    assert info["status"] == "finished" and info["trainer"] == "mytrainer" and info["step"] == 3
    assert info["name"] + "_" + info["id"] == run.dir.name
    for key in ("created_at", "finished_at", "command", "git_commit", "host", "pid", "versions", "error"):
        assert key in info
    assert info["created_at"].endswith("Z") and info["versions"]["runforge"] == runforge.__version__

    config_text = (run.dir / "config.json").read_text()
    assert config_text == '{\n  "lr": 0.001,\n  "layers": [\n    1,\n    2\n  ]\n}\n'

    lines = runforge.read_metrics(run.dir)
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert list(lines[0]) == ["step", "time", "loss", "losses"] and lines[0]["losses"] == {"l1": 0.5}
    assert all(isinstance(line["time"], float) for line in lines)

    status = read_status(run.dir)
    for key in ("step_current", "step_max", "epoch_num", "epoch_step_current", "epoch_step_total", "iteration_duration",
                "eta_total_seconds", "eta_total_formatted", "memory_rss_bytes", "training_active", "training_paused",
                "validation_running", "last_update_time"):
        assert key in status
    assert status["step_current"] == 3 and status["step_max"] == 3 and status["training_active"] is False

    assert [p.name for p in (run.dir / "images").iterdir()] == ["step_0003_cam3.png"]
    snapshot = read_json(run.dir / "stats" / "stats_3.json")
    assert snapshot["total_loss_value"] == 0.33 and snapshot["step_current"] == 3
    assert read_json(run.dir / "maps" / "step_0003.json") == {"blocks": []}
    events = (run.dir / "events.log").read_text()
    assert "started" in events and "Statistics saved: stats_3.json" in events and "finished at step 3" in events


def test_images_dir_moves_the_pngs_and_readers_follow_it(tmp_dir):
    with runforge.Run(out="r", images_dir="samples") as run:
        run.image(7, "samples", [[[0, 0, 255]] * 4] * 3)
    assert [p.name for p in (run.dir / "samples").iterdir()] == ["step_0007_samples.png"]
    assert not (run.dir / "images").exists()
    assert read_json(run.dir / "run.json")["images_dir"] == "samples"
    assert [p.relative_to(run.dir).as_posix() for p in runforge.run.list_images(run.dir)] == ["samples/step_0007_samples.png"]


def test_a_snapshot_carries_the_fields_its_run_declares_and_run_json_records_them(tmp_dir):
    from runforge.run.snapshot_fields import SNAPSHOT_FIELDS, SNAPSHOT_GROUPS

    with runforge.Run(out="plain", steps=5) as run:  # a user's script: no declaration
        path = run.snapshot(5, {"loss_valid": 0.5})
    plain = read_json(path)
    assert list(plain) == [*SNAPSHOT_FIELDS, "loss_valid"] and plain["step_max"] == 5
    assert not [key for key in plain if key.startswith(("adaptive_", "quality_")) or key.endswith("_loss_value")]
    assert read_json(run.dir / "run.json")["snapshot_groups"] == {k: list(v) for k, v in SNAPSHOT_GROUPS.items()}

    groups = {"validation": ("psnr", "ssim", "lpips", "ellipse_time", "num_GS")}
    with runforge.Run(out="declared", snapshot_groups=groups) as run:
        path = run.snapshot(7, {"psnr": 24.5, "ssim": 0.8, "ellipse_time": 0.01, "num_GS": 900})
    data = read_json(path)
    assert list(data) == ["step_current", "last_update_time", "psnr", "ssim", "lpips", "ellipse_time", "num_GS"]
    assert data["step_current"] == 7 and data["lpips"] is None
    recorded = {"run": ["step_current", "last_update_time"], "validation": list(groups["validation"])}
    assert read_json(run.dir / "run.json")["snapshot_groups"] == recorded

    info = read_json(run.dir / "run.json")  # a run from before declarations: run.json has none
    del info["snapshot_groups"]
    (run.dir / "run.json").write_text(json.dumps(info))
    with runforge.Run(out="declared", resume=True, snapshot_groups=groups):
        pass
    assert read_json(run.dir / "run.json")["snapshot_groups"] == recorded


def test_a_bad_declaration_is_refused_before_anything_is_written(tmp_dir):
    for bad in ({"a": "psnr"}, {"a": ["psnr"], "b": ["psnr"]}):
        try:
            runforge.Run(out="r", snapshot_groups=bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{bad} was accepted")
    assert not (tmp_dir / "r").exists()


def test_snapshots_are_read_where_run_json_says_else_from_stats(tmp_dir):
    with runforge.Run(out="r", snapshot_dir="Learn", snapshot_pattern="Statistik_{step}.json") as run:
        run.snapshot(4, {})
    assert [(step, path.name) for step, path in list_snapshots(run.dir)] == [(4, "Statistik_4.json")]
    info = read_json(run.dir / "run.json")
    for key in ("snapshot_dir", "snapshot_pattern"):
        del info[key]
    (run.dir / "run.json").write_text(json.dumps(info))
    assert list_snapshots(run.dir) == []  # Learn/ is the sr trainer's folder, not a default
    (run.dir / "stats").mkdir()
    (run.dir / "stats" / "stats_9.json").write_text("{}")
    assert [step for step, _ in list_snapshots(run.dir)] == [9]


def test_names_count_runs_in_root_and_out_is_used_as_is(tmp_dir):
    for expected in (1, 2):
        with runforge.Run(root="runs") as run:
            pass
        assert run.dir.name.split("_")[0].endswith(f"-{expected}")
    with runforge.Run(out="results/x") as run:
        pass
    assert run.dir == tmp_dir / "results" / "x" and (run.dir / "run.json").exists()


def test_out_holding_a_run_is_refused_without_resume_or_overwrite(tmp_dir):
    with runforge.Run(out="r", config={"a": 1}):
        pass
    before = (tmp_dir / "r" / "run.json").read_bytes()
    try:
        runforge.Run(out="r")
    except runforge.RunExistsError as exc:
        assert "--resume" in str(exc) and "--overwrite" in str(exc)
    else:
        raise AssertionError("a second run into the same --out was accepted")
    assert (tmp_dir / "r" / "run.json").read_bytes() == before
    with runforge.Run(out="r", overwrite=True, config={"a": 2}) as run:
        pass
    assert read_json(run.dir / "config.json") == {"a": 2}


def test_nonfinite_metrics_become_null_and_are_listed(tmp_dir):
    with runforge.Run(out="r") as run:
        run.log(1, {"loss": float("nan"), "parts": {"a": float("inf"), "b": 1.0}})
    line = json.loads((tmp_dir / "r" / "train.jsonl").read_text())
    assert line["loss"] is None and line["parts"] == {"a": None, "b": 1.0}
    assert line["nonfinite"] == ["loss", "parts.a"]


def test_reserved_metric_names_and_bad_image_names_are_refused(tmp_dir):
    with runforge.Run(out="r") as run:
        for bad in ({"step": 1}, {"time": 2.0}):
            try:
                run.log(1, bad)
            except ValueError:
                pass
            else:
                raise AssertionError(f"{bad} was accepted")
        try:
            run.image(1, "../escape", [[0]])
        except ValueError:
            pass
        else:
            raise AssertionError("an image name with a path was accepted")


def test_an_exception_in_the_block_marks_the_run_failed(tmp_dir):
    try:
        with runforge.Run(out="r"):
            raise RuntimeError("diverged")
    except RuntimeError:
        pass
    info = read_json(tmp_dir / "r" / "run.json")
    assert info["status"] == "failed" and info["error"] == "RuntimeError: diverged"


def test_public_surface_is_explicit():
    import subprocess
    import sys

    # The run layer's names are loaded on first use, so the fresh module holds a subset of __all__
    # and dir() the whole of it; neither may show anything else that is public.
    code = "import runforge, types; print(sorted(n for n, v in vars(runforge).items() " \
           "if not n.startswith('_') and not isinstance(v, types.ModuleType))); " \
           "print(sorted(n for n in dir(runforge) " \
           "if not n.startswith('_') and not isinstance(getattr(runforge, n), types.ModuleType)))"
    loaded, listed = (json.loads(line.replace("'", '"')) for line in subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines())
    assert set(loaded) <= set(runforge.__all__)
    assert listed == sorted(set(runforge.__all__) - {"__version__"})
    for name in ("Run", "export", "list_runs", "read_metrics"):
        assert name in runforge.__all__
