"""Several seeds side by side (`runforge sweep kolmogorov --grid seed=...`, which replaced `--array`) and
wandb offline logging of `runforge train kolmogorov`."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runforge.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))
import slurm_standins  # noqa: E402

torch.set_num_threads(1)
RUN_DIR = re.compile(r"^([a-z]+-[a-z]+-\d+)_([a-z0-9]{8})$")


TINY = ["--preset", "tiny", "--epochs", "1", "--window", "3", "--sample_steps", "2"]


def seed_runs(folder):
    """The sweep's run folders, each checked to be a complete kolmogorov run; {seed: folder}."""
    runs = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        info = json.loads((run / "run.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert info["status"] == "finished" and info["trainer"] == "kolmogorov" and config["array"] == 1
        assert (run / "state.pth").is_file() and list((run / "ckpts").glob("ckpt_*_rank0.pt"))
        assert run.name == f"{len(runs):02d}-seed_{config['seed']}"
        runs[config["seed"]] = run
    return runs


def test_three_seeds_side_by_side_are_exactly_three_complete_runs(kolmogorov_data, tmp_path):
    root = tmp_path / "runs"
    code = main(["sweep", "kolmogorov", *TINY, "--data", str(kolmogorov_data), "--grid", "seed=0..2", "-j", "2",
                 "--root", str(root), "--name", "seeds"])
    assert code == 0
    assert [p.name for p in root.iterdir()] == ["seeds"]
    runs = seed_runs(root / "seeds")
    assert sorted(runs) == [0, 1, 2]
    sweep = json.loads((root / "seeds" / "sweep.json").read_text())
    assert [p["dir"] for p in sweep["points"]] == [runs[s].name for s in (0, 1, 2)]
    assert all("loss_train" in p["final_metrics"] for p in sweep["points"])
    assert len({json.loads((r / "run.json").read_text())["pid"] for r in runs.values()}) == 3


def test_seeds_through_submitit_on_slurm_with_stand_ins(kolmogorov_data, tmp_path, monkeypatch):
    bin_dir = slurm_standins.install(tmp_path / "bin", monkeypatch)
    root = tmp_path / "runs"
    code = main(["sweep", "kolmogorov", *TINY, "--data", str(kolmogorov_data), "--device", "cpu",
                 "--grid", "seed=5..6", "--executor", "slurm", "--root", str(root), "--name", "cluster"])
    assert code == 0
    assert sorted(seed_runs(root / "cluster")) == [5, 6]
    script = (bin_dir / "submitted.sh").read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --cpus-per-task=2" in script and "gpus" not in script
    assert f"{sys.executable} -u -m submitit.core._submit" in script  # this venv's interpreter, not the node's


@pytest.mark.parametrize("extra, needle", [
    (["--array", "3", "--workers", "2"], "--array 3: job arrays are sweeps now: runforge sweep kolmogorov --grid seed=4..6 -j 2"),
    (["--array", "2", "--backend", "slurm"], "--executor slurm"),
])
def test_array_is_refused_with_the_sweep_that_replaces_it(kolmogorov_data, tmp_path, extra, needle):
    done = subprocess.run([sys.executable, "-m", "runforge", "train", "kolmogorov", *TINY, "--data", str(kolmogorov_data),
                           "--seed", "4", *extra], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("runforge: error: ")
    assert needle in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_names_the_run_dir_writes_its_files_and_touches_no_network(kolmogorov_data, tmp_path, monkeypatch):
    outside = []
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            outside.append(address)
            raise OSError(f"test: network access to {address} is forbidden")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = tmp_path / "runs"
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--root", str(root), "--epochs", "1",
                 "--window", "3", "--sample_steps", "2", "--wandb", "offline", "--progress", "lines"])
    assert code == 0
    assert outside == []
    (run,) = list(root.iterdir())
    name, run_id = RUN_DIR.match(run.name).groups()
    (offline,) = list((run / "wandb").glob("offline-run-*"))
    assert offline.name.endswith(f"-{run_id}")
    assert (offline / f"run-{run_id}.wandb").stat().st_size > 0
    events = (run / "events.log").read_text()
    assert f"wandb offline: project sda-kolmogorov, run {name} ({run_id})" in events
    assert (run / "state.pth").is_file()
    assert json.loads((run / "config.json").read_text())["wandb"] == "offline"
