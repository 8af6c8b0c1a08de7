"""The analysis CLI: docs/monitor.md's three sr examples as one command each, csv, plot, compare, runs."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

import runforge
from runforge.cli import main

from monitor_helpers import make_run

SEED_STATS = {  # step: (quality_improvement_value, quality_ki_value, adaptive_plateau_counter, lr boost available)
    500: (0.123, 0.542, 42, False),
    1000: (0.157, 0.578, 120, False),
    1500: (0.182, 0.613, 420, True),
}


def _sr_like_run(root, dirname, offset=0.0):
    """A run that writes Statistik_{STEP}.json into Learn/, as the sr trainer does."""
    with runforge.Run(trainer="sr", config={}, out=root / dirname, steps=1500, tensorboard=False, progress=False,
                      handle_signals=False, snapshot_dir="Learn", snapshot_pattern="Statistik_{step}.json") as run:
        for step in range(100, 1501, 100):
            run.log(step, {"loss": 1.0 / step, "losses": {"l1": 0.5 / step}})
            if step in SEED_STATS:
                improvement, ki, plateau, boost = SEED_STATS[step]
                run.snapshot(step, {"quality_improvement_value": improvement + offset, "quality_ki_value": ki,
                                    "adaptive_plateau_counter": plateau, "adaptive_lr_boost_available": boost,
                                    "layer_activity_map": {"Forward_Block_01": 38.7, "Final_Fusion": 67.3}})
    return root / dirname


@pytest.fixture
def two_runs(tmp_path, capsys):
    runs = _sr_like_run(tmp_path, "run-a"), _sr_like_run(tmp_path, "run-b", offset=0.01)
    capsys.readouterr()  # the runs' own console lines
    return runs


def test_seed_improvement_over_time_is_one_command(two_runs, capsys):
    run_a, _ = two_runs
    assert main(["csv", str(run_a), "--source", "stats", "--field", "quality_improvement_value,quality_ki_value"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["step", "quality_improvement_value", "quality_ki_value"]
    assert [(int(s), float(i), float(k)) for s, i, k in rows[1:]] == [(s, v[0], v[1]) for s, v in SEED_STATS.items()]


def test_seed_plateau_warning_is_one_command(two_runs, capsys):
    run_a, _ = two_runs
    assert main(["show", str(run_a), "--step", "1500"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: Plateau detected for 420 steps!" in out and "LR Boost is available and will trigger soon" in out
    assert main(["show", str(run_a), "--step", "500"]) == 0
    assert "Training is progressing (plateau: 42 steps)" in capsys.readouterr().out
    assert main(["show", str(run_a), "--step", "1500", "--plateau", "500"]) == 0
    assert "Training is progressing (plateau: 420 steps)" in capsys.readouterr().out
    assert main(["show", str(run_a), "--step", "700"]) == 2
    err = capsys.readouterr().err
    assert "no statistics snapshot at step 700" in err and "500, 1000, 1500" in err


def test_show_of_another_trainers_run_has_no_sr_words(tmp_path, capsys):
    with runforge.Run(trainer="splat", out=tmp_path / "splat", tensorboard=False, progress=False,
                      handle_signals=False, snapshot_groups={"validation": ("psnr", "ssim")}) as run:
        run.snapshot(7, {"psnr": 24.5, "ssim": 0.81})
    capsys.readouterr()
    for extra in ([], ["--step", "7"], ["--step", "7", "--plateau", "5"]):
        assert main(["show", str(tmp_path / "splat"), *extra]) == 0
        out = capsys.readouterr().out
        assert "24.5" in out and "snapshot at step 7" in out
        assert "plateau" not in out.lower() and "adaptive" not in out and "LR Boost" not in out


def test_seed_compare_two_runs_is_one_command(two_runs, capsys):
    run_a, run_b = two_runs
    assert main(["compare", str(run_a), str(run_b), "--step", "1000", "--field", "quality_improvement_value",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 1000 and result["runs"] == ["run-a", "run-b"]
    [row] = result["rows"]
    assert row["field"] == "quality_improvement_value" and row["values"] == [0.157, 0.167]
    assert row["diff"] == pytest.approx(0.01)
    assert main(["compare", str(run_a), str(run_b)]) == 0  # the table, at the latest common step
    table = capsys.readouterr().out
    assert "snapshots at step 1500" in table and "layer_activity_map.Final_Fusion" in table and "run-b" in table
    assert main(["compare", str(run_a), str(run_b), "--field", "no_such_field"]) == 2
    assert "no field 'no_such_field'" in capsys.readouterr().err


def test_compare_without_common_snapshots_uses_the_last_metrics(tmp_path, capsys):
    a = make_run(tmp_path, "a", steps=4)
    b = make_run(tmp_path, "b", steps=8, snapshots={8: {"best_quality_ever": 1.0}})
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] is None and "last logged metrics" in result["source"]
    rows = {r["field"]: r["values"] for r in result["rows"]}
    assert rows["step"] == [4, 8] and rows["loss"] == [0.25, 0.125] and rows["losses.l1"] == [0.125, 0.0625]


def test_csv_of_metrics_has_one_row_per_step_with_nested_keys_joined(tmp_path, capsys):
    with runforge.Run(trainer="unit", out=tmp_path / "r", tensorboard=False, progress=False,
                      handle_signals=False) as run:
        for step in (1, 2):
            run.log(step, {"loss": step * 0.5, "losses": {"l1": step * 0.25}})
        run.log(2, {"val": {"loss": 0.75}})  # a validation line at the same step joins that step's row
    out = tmp_path / "metrics.csv"
    assert main(["csv", str(tmp_path / "r"), "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[1]["loss"] == "1.0" and rows[1]["losses.l1"] == "0.5" and rows[1]["val.loss"] == "0.75"
    assert rows[0]["val.loss"] == "" and "time" in rows[0]
    assert main(["csv", str(tmp_path / "r"), "--source", "stats"]) == 2
    assert "has no statistics snapshots" in capsys.readouterr().err


def test_plot_writes_a_png_of_several_runs(two_runs, tmp_path, capsys):
    run_a, run_b = two_runs
    out = tmp_path / "progress.png"
    assert main(["plot", str(run_a), str(run_b), "--metric", "loss", "--metric", "quality_improvement_value",
                 "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 400)  # two panels side by side
        colours = image.convert("RGB").getcolors(1 << 20)
    assert len(colours) > 50  # curves, axes and text were drawn, not a blank canvas
    assert main(["plot", str(run_a), "--metric", "nope", "-o", str(tmp_path / "x.png")]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_runs_table_is_newest_first_with_best_metric(tmp_path, capsys):
    old = make_run(tmp_path / "runs", "old", steps=5, snapshots={5: {"best_quality_ever": 0.75}})
    new = make_run(tmp_path / "runs", "new", steps=7)
    for run_dir, created in ((old, "2026-01-01T00:00:00Z"), (new, "2026-03-01T00:00:00Z")):
        info = json.loads((run_dir / "run.json").read_text())
        info["created_at"] = created
        (run_dir / "run.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [json.loads((d / "run.json").read_text())["id"] for d in (new, old)]
    assert (rows[1]["best"], rows[1]["step"], rows[1]["step_max"]) == (0.75, 5, 5)
    assert main(["runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    for column in ("name", "trainer", "status", "step/max", "ETA", "best metric", "started"):
        assert column in table
    assert table.index("new_") < table.index("old_") and "5/5" in table and "0.75" in table


def test_serve_refuses_a_root_that_is_not_a_directory(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope: is not a directory of runs" in err[0]


def test_readers_skip_a_damaged_line_with_one_warning_line_and_show_the_rest(tmp_path, capsys):
    run_dir = make_run(tmp_path, "r", steps=4)
    log = run_dir / "train.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b'{"step": 2, "lo\n' + b"".join(lines[2:]) + b'{"step": 5, "lo')  # and an unfinished line
    capsys.readouterr()
    warning = f"runforge: warning: {log}: line 2 is not valid JSON; skipped it"
    assert main(["csv", str(run_dir), "--field", "loss"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["step,loss", "1,1.0", "3,0.3333333333333333", "4,0.25"]
    assert err.splitlines() == [warning]  # one line, and none for the unfinished last line
    assert main(["show", str(run_dir), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["logged_lines"] == 3 and err.splitlines() == [warning]
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "p.png")]) == 0  # reads the log once per metric
    assert capsys.readouterr().err.splitlines() == [warning]
