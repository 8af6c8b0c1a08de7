"""Job arrays (`--array N` through dawgz) and wandb offline logging of `runforge train kolmogorov`."""

import json
import re
import socket

import pytest
import torch

from runforge.cli import main
from runforge.trainers.kolmogorov.config import data_preset
from runforge.trainers.kolmogorov.data import generate

torch.set_num_threads(1)
RUN_DIR = re.compile(r"^([a-z]+-[a-z]+-\d+)_([a-z0-9]{8})$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("kdata")
    cfg = data_preset("tiny")
    cfg.trajectories, cfg.length = 10, 6
    generate(cfg, out, log=lambda _: None)
    return out


def test_array_of_three_runs_in_parallel_each_in_its_own_directory(data, tmp_path):
    root = tmp_path / "runs"
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(data), "--root", str(root), "--epochs", "1",
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


def test_wandb_offline_names_the_run_dir_writes_its_files_and_touches_no_network(data, tmp_path, monkeypatch):
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
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(data), "--root", str(root), "--epochs", "1",
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
