"""`runforge sweep`: one run per point in one sweep folder, through submitit (local processes, or a Slurm
array run by stand-ins for sbatch/srun/sacct), with sweep.json describing the points and their results."""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_standins  # noqa: E402

from runforge.cli import main  # noqa: E402
from runforge.monitor.catalog import Catalog, run_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def sweep_json(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text(encoding="utf-8"))


def run_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_complete(run: Path, **values) -> dict:
    info = json.loads((run / "run.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert info["status"] == "finished" and info["trainer"] == "toy"
    assert (run / "train.jsonl").stat().st_size > 0 and list((run / "ckpts").glob("ckpt_*"))
    for key, value in values.items():
        assert config[key] == value, (run, key)
    return info


def test_a_2x2_grid_on_the_local_executor_gives_four_complete_runs_named_by_their_point(tmp_path, capsys):
    code = main(["sweep", "toy", "--preset", "tiny", "--grid", "lr=1e-3,1e-2", "steps=20,30", "-j", "2",
                 "--root", str(tmp_path / "runs"), "--name", "grid", "--noise", "0.1"])
    out = capsys.readouterr().out
    assert code == 0
    folder = tmp_path / "runs" / "grid"
    sweep = sweep_json(folder)
    assert sweep["status"] == "finished" and sweep["trainer"] == "toy" and sweep["varied"] == ["lr", "steps"]
    assert sweep["grid"] == {"lr": {"values": [0.001, 0.01]}, "steps": {"values": [20, 30]}}
    assert sweep["executor"]["kind"] == "local" and sweep["executor"]["jobs"] == 2
    assert sweep["started_at"] and sweep["ended_at"]
    expected = [(0.001, 20), (0.001, 30), (0.01, 20), (0.01, 30)]
    assert [tuple(p["values"].values()) for p in sweep["points"]] == expected
    dirs = run_dirs(folder)
    assert [d.name for d in dirs] == [p["dir"] for p in sweep["points"]] == [
        "00-lr_0.001-steps_20", "01-lr_0.001-steps_30", "02-lr_0.01-steps_20", "03-lr_0.01-steps_30"]
    pids = set()
    for point, run in zip(sweep["points"], dirs):
        lr, steps = point["values"]["lr"], point["values"]["steps"]
        info = assert_complete(run, lr=lr, steps=steps, noise=0.1, log_every=5)  # tiny preset + shared flag
        assert point["status"] == "finished" and point["exit_code"] == 0 and point["error"] is None
        assert point["config"] == json.loads((run / "config.json").read_text())
        assert point["final_step"] == steps and isinstance(point["final_metrics"]["loss"], float)
        assert info["step"] == steps and "--lr" in info["command"]
        pids.add(info["pid"])
        assert run.name in out
    assert len(pids) == 4 and os.getpid() not in pids  # each point in its own process
    assert "4 of 4 finished" in out
    # `runforge runs FOLDER` lists exactly the sweep's runs
    rows = run_rows([folder])
    assert sorted(r["name"] for r in rows) == [d.name for d in dirs]
    # and the runs root above it lists them too, keyed by sweep and point (the dashboard's keys)
    (tmp_path / "runs" / "other").mkdir()  # neither a run nor a sweep: not listed
    assert sorted(r["name"] for r in run_rows([tmp_path / "runs"])) == [d.name for d in dirs]
    assert sorted(e.key for e in Catalog([tmp_path / "runs"]).entries()) == [f"grid.{d.name}" for d in dirs]


def test_random_points_from_a_log_range_and_from_lists(tmp_path):
    root = tmp_path / "runs"
    code = main(["sweep", "toy", "--preset", "tiny", "--steps", "10", "--grid", "lr=1e-3:1e-1", "batch_size=8,16",
                 "--random", "3", "-j", "2", "--root", str(root), "--name", "rand"])
    assert code == 0
    sweep = sweep_json(root / "rand")
    assert sweep["mode"] == "random" and sweep["random"] == 3 and sweep["random_seed"] == 0
    assert sweep["grid"]["lr"] == {"range": [0.001, 0.1], "scale": "log", "type": "float"}
    assert len(sweep["points"]) == len(run_dirs(root / "rand")) == 3
    for point, run in zip(sweep["points"], run_dirs(root / "rand")):
        assert 1e-3 <= point["values"]["lr"] <= 1e-1 and point["values"]["batch_size"] in (8, 16)
        assert_complete(run, lr=point["values"]["lr"], batch_size=point["values"]["batch_size"], steps=10)

    # lists only: N distinct points of the product
    code = main(["sweep", "toy", "--preset", "tiny", "--steps", "10", "--grid", "seed=0..2", "batch_size=8,16",
                 "--random", "2", "--root", str(root), "--name", "lists"])
    assert code == 0
    points = sweep_json(root / "lists")["points"]
    assert len(points) == 2 and len({tuple(p["values"].values()) for p in points}) == 2
    assert len(run_dirs(root / "lists")) == 2


def test_a_point_that_does_not_finish_is_reported_and_the_sweep_exits_1(tmp_path, capsys):
    import threading

    from runforge.run import control
    from conftest import wait_for

    root = tmp_path / "runs"
    slow = root / "stop" / "01-steps_400"

    def stop_the_slow_point():
        wait_for(lambda: (slow / "status.json").exists(), timeout=60, what="the slow point's run")
        control.send(slow, "stop")

    stopper = threading.Thread(target=stop_the_slow_point, daemon=True)
    stopper.start()
    code = main(["sweep", "toy", "--preset", "tiny", "--step_sleep", "0.02", "--grid", "steps=10,400", "-j", "2",
                 "--root", str(root), "--name", "stop"])
    stopper.join(timeout=5)
    out = capsys.readouterr().out
    assert code == 1
    sweep = sweep_json(root / "stop")
    assert sweep["status"] == "failed"
    assert [p["status"] for p in sweep["points"]] == ["finished", "interrupted"]
    assert sweep["points"][1]["final_step"] < 400
    assert "1 of 2 finished" in out


BAD = [
    ("unknown-trainer", ["sweep", "nosuch", "--grid", "lr=1"], "unknown trainer 'nosuch'"),
    ("key-not-a-flag", ["sweep", "toy", "--grid", "lrr=1,2"], "--grid lrr: not a flag of toy (did you mean lr?)"),
    ("wrong-type", ["sweep", "toy", "--grid", "steps=10,ten"], "--grid steps: expected an integer, got 'ten'"),
    ("out-of-range", ["sweep", "toy", "--grid", "lr=0.1,-1"], "--grid lr: must be > 0, got -1.0"),
    ("no-grid", ["sweep", "toy", "--random", "3"], "--grid"),
    ("range-without-random", ["sweep", "toy", "--grid", "lr=1e-3:1e-1"], "--grid lr: a range lo:hi needs --random N"),
    ("random-more-than-grid", ["sweep", "toy", "--grid", "lr=0.1,0.2", "--random", "3"],
     "--random: 3 points asked, the grid holds only 2"),
    ("random-zero", ["sweep", "toy", "--grid", "lr=0.1", "--random", "0"], "--random"),
    ("jobs-zero", ["sweep", "toy", "--grid", "lr=0.1", "-j", "0"], "-j"),
    ("range-backwards", ["sweep", "toy", "--grid", "lr=0.1:0.01", "--random", "2"], "must go from low to high"),
    ("range-not-numbers", ["sweep", "toy", "--grid", "steps=a:b", "--random", "2"], "--grid steps: expected an integer"),
    ("grid-and-flag", ["sweep", "toy", "--grid", "lr=0.1,0.2", "--lr", "0.3"], "--lr: given both as a flag and in --grid"),
    ("unknown-flag", ["sweep", "toy", "--grid", "lr=0.1", "--nosuch", "1"], "unrecognized arguments: --nosuch"),
    ("shared-flag-bad", ["sweep", "toy", "--grid", "lr=0.1", "--steps", "0"], "--steps: must be >= 1"),
    ("bad-name", ["sweep", "toy", "--grid", "lr=0.1", "--name", "a/b"], "--name 'a/b'"),
    ("slurm-missing", ["sweep", "toy", "--grid", "lr=0.1", "--executor", "slurm"], "--executor slurm: sbatch, srun, sacct not on PATH"),
    ("config-missing", ["sweep", "toy", "--grid", "lr=0.1", "--config", "missing.json"], "missing.json"),
    ("folder-exists", ["sweep", "toy", "--grid", "lr=0.1", "--name", "taken"], "runs/taken: exists"),
]


@pytest.mark.parametrize("args, needle", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, args, needle):
    import subprocess

    if "taken" in args:
        (tmp_path / "runs" / "taken").mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    env = {**os.environ, "PATH": str(tmp_path / "nobin")} if "slurm" in args else None
    done = subprocess.run([sys.executable, "-m", "runforge", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runforge: error: ") and needle in lines[0], done.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_sweep_on_slurm_through_submitit_with_stand_ins(tmp_path, monkeypatch, capsys):
    bin_dir = slurm_standins.install(tmp_path / "bin", monkeypatch)
    root = tmp_path / "runs"
    code = main(["sweep", "toy", "--preset", "tiny", "--grid", "seed=3,4", "--executor", "slurm", "-j", "1",
                 "--slurm_cpus", "3", "--root", str(root), "--name", "slurm"])
    assert code == 0, capsys.readouterr()
    sweep = sweep_json(root / "slurm")
    assert sweep["executor"]["kind"] == "slurm" and {p["status"] for p in sweep["points"]} == {"finished"}
    assert [p["job_id"] for p in sweep["points"]] == ["4242_0", "4242_1"]
    for point, run in zip(sweep["points"], run_dirs(root / "slurm")):
        assert_complete(run, seed=point["values"]["seed"])
    script = (bin_dir / "submitted.sh").read_text()
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --cpus-per-task=3" in script
    assert "#SBATCH --time=1440" in script and "gpus" not in script
    assert f"{sys.executable} -u -m submitit.core._submit" in script  # this interpreter on the node
