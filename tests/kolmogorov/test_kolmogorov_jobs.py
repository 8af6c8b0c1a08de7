"""Job arrays (`--array N` through dawgz) and wandb offline logging of `runforge train kolmogorov`."""

import json
import os
import re
import socket
import sys

import pytest
import torch

from runforge.cli import main

torch.set_num_threads(1)
RUN_DIR = re.compile(r"^([a-z]+-[a-z]+-\d+)_([a-z0-9]{8})$")


def test_array_of_three_runs_in_parallel_each_in_its_own_directory(kolmogorov_data, tmp_path):
    root = tmp_path / "runs"
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--root", str(root), "--epochs", "1",
                 "--window", "3", "--sample_steps", "2", "--array", "3", "--workers", "2", "--progress", "lines"])
    assert code == 0
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(dirs) == 4 and all(RUN_DIR.match(p.name) for p in dirs)
    (record,) = [p for p in dirs if (p / "array.json").exists()]
    array = json.loads((record / "array.json").read_text())
    assert array["backend"] == "async" and not array["failures"]
    members = array["members"]
    assert [m["seed"] for m in members] == [0, 1, 2]
    assert {m["status"] for m in members} == {"finished"}
    member_dirs = {m["dir"] for m in members}
    assert member_dirs == {str(p) for p in dirs if p != record}
    assert len({m["pid"] for m in members}) >= 2  # ran in worker processes, not one after another in this one
    for m in members:
        config = json.loads((root / m["dir"].rsplit("/", 1)[1] / "config.json").read_text())
        assert config["seed"] == m["seed"] and config["array"] == 1
        assert (root / m["dir"].rsplit("/", 1)[1] / "state.pth").is_file()
    assert json.loads((record / "config.json").read_text())["array"] == 3


FAKE_SBATCH = """#!/bin/sh
# Runs every task of the submitted array now, as a Slurm node would, then prints a job id.
script="$2"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$script")
cp "$script" "$(dirname "$0")/submitted.sh"
for i in $(seq 0 "$last"); do SLURM_ARRAY_TASK_ID=$i sh "$script" || exit 1; done
echo 4242
"""


@pytest.mark.parametrize("backend", ["submitit", "slurm"])
def test_array_through_submitit_and_a_slurm_submission(backend, kolmogorov_data, tmp_path, monkeypatch):
    if backend == "slurm":  # sbatch and srun stand-ins that execute the generated submission script
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "sbatch").write_text(FAKE_SBATCH)
        (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
        for tool in ("sbatch", "srun"):
            (bin_dir / tool).chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "runs"
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--root", str(root), "--epochs", "1",
                 "--window", "3", "--sample_steps", "2", "--array", "2", "--backend", backend, "--device", "cpu",
                 "--progress", "lines"])
    assert code == 0
    (record,) = [p for p in root.iterdir() if (p / "array.json").exists()]
    array = json.loads((record / "array.json").read_text())
    assert array["backend"] == backend and not array["failures"]
    assert [m["seed"] for m in array["members"]] == [0, 1]
    assert {m["status"] for m in array["members"]} == {"finished"}
    for m in array["members"]:
        assert (root / m["dir"].rsplit("/", 1)[1] / "state.pth").is_file()
    if backend == "slurm":
        script = (tmp_path / "bin" / "submitted.sh").read_text()
        assert "#SBATCH --array=0-1" in script and "#SBATCH --cpus-per-task=2" in script
        assert "--gpus" not in script  # --device cpu asks for no GPU
        assert f"srun {sys.executable} " in script  # this venv's interpreter, not the node's `python`


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
