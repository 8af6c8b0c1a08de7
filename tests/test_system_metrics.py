"""system.jsonl: the CPU, memory and GPU figures the run layer samples on its writer thread."""

import importlib.machinery
import json
import signal
import subprocess
import sys
import time
import types

import pytest

import runforge
from runforge.run import system
from runforge.run.system import SystemSampler, read_system

from conftest import PYTHON, wait_for

KILLED_TRAINER = """
import time, runforge
with runforge.Run(out="r", steps=10**6, system_interval=0.2, tensorboard=False, progress=False) as run:
    for step in range(1, 10**6):
        run.log(step, {"loss": 1.0 / step})
        run.poll(step)
        time.sleep(0.01)
"""


def test_samples_appear_at_the_period_with_every_figure(tmp_dir):
    with runforge.Run(out="r", system_interval=0.5, tensorboard=False, progress=False) as run:
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < 2.3:
            step += 1
            run.log(step, {"loss": 1.0})
            run.poll(step)
            time.sleep(0.02)
    samples = read_system("r")
    assert read_system("r/system.jsonl") == samples
    assert 3 <= len(samples) <= 5, samples
    walls = [s["wall"] for s in samples]  # every 0.5 s, on the writer's 0.2 s heartbeat (later on a busy machine)
    assert all(0.45 <= later - earlier <= 1.5 for earlier, later in zip(walls, walls[1:])), walls
    steps = [s["step"] for s in samples]
    assert steps == sorted(steps) and 0 < steps[-1] <= step
    for sample in samples:
        assert {"step", "time", "wall", "cpu_percent", "rss_bytes", "ram_percent"} <= set(sample)
        assert sample["rss_bytes"] > 10 * 2**20 and 0 < sample["ram_percent"] <= 100
        assert 0 <= sample["cpu_percent"] < 400
    times = [s["time"] for s in samples]
    assert times == sorted(times) and times[-1] < 3.0  # seconds of training, as train.jsonl's `time`


def test_no_samples_when_switched_off(tmp_dir):
    with runforge.Run(out="r", system_interval=None, tensorboard=False, progress=False) as run:
        run.log(1, {"loss": 1.0})
        time.sleep(0.5)
    assert not (tmp_dir / "r" / "system.jsonl").exists()
    assert read_system("r") == []


def test_a_bad_interval_is_refused_before_anything_is_written(tmp_dir):
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="system_interval must be seconds >= 0 or None"):
            runforge.Run(out="r", system_interval=bad)
        assert not (tmp_dir / "r").exists()


def test_a_system_jsonl_that_cannot_be_written_is_a_warning_and_the_heartbeat_goes_on(tmp_dir):
    with runforge.Run(out="r", system_interval=0.2, tensorboard=False, progress=False) as run:
        (tmp_dir / "r" / "system.jsonl").mkdir()
        run.poll(1)
        events = tmp_dir / "r" / "events.log"
        warning = "Failed to save system.jsonl, no more system samples"
        wait_for(lambda: warning in events.read_text(), what="the warning")
        status = tmp_dir / "r" / "status.json"  # its first write may come after the warning
        first = wait_for(lambda: status.exists() and json.loads(status.read_text())["last_update_time"],
                         what="a heartbeat")
        wait_for(lambda: json.loads(status.read_text())["last_update_time"] > first, what="a later heartbeat")
    assert events.read_text().count("no more system samples") == 1


def _cpu_percent_over(seconds, work):
    """(the sampler's CPU %, the same from time.process_time) over `seconds` of `work(deadline)`."""
    sampler = SystemSampler(None, 10.0, elapsed=lambda: 0.0)
    cpu, wall = time.process_time(), time.monotonic()
    work(wall + seconds)
    expected = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
    return sampler.sample(1, time.monotonic())["cpu_percent"], expected


def test_cpu_percent_of_a_busy_and_of_a_sleeping_process():
    def spin(deadline):
        while time.monotonic() < deadline:
            pass

    def sleep(deadline):
        time.sleep(deadline - time.monotonic())

    idle, expected = _cpu_percent_over(1.0, sleep)
    assert idle < 20 and abs(idle - expected) < 10, (idle, expected)
    busy, expected = _cpu_percent_over(1.0, spin)
    assert abs(busy - expected) < 10, (busy, expected)  # what the kernel counted, whatever the machine's load
    if expected < 55:
        pytest.skip(f"the machine gave the busy loop only {expected:.0f} % of a core (other processes)")
    assert busy > 50


def test_gpu_figures_only_when_cuda_is_started_and_utilisation_only_with_pynvml(monkeypatch):
    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: False,
                                 memory_allocated=lambda: 3 * 2**30, memory_reserved=lambda: 4 * 2**30,
                                 max_memory_allocated=lambda: 5 * 2**30, utilization=lambda: 87)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert system.cuda_now() == {}  # imported but CUDA not started: nothing here starts it
    cuda.is_initialized = lambda: True
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml fails
    assert system.cuda_now() == {"gpu_mem_allocated_gb": 3.0, "gpu_mem_reserved_gb": 4.0}
    pynvml = types.ModuleType("pynvml")
    pynvml.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    assert system.cuda_now()["gpu_util_percent"] == 87.0


def test_a_resumed_run_keeps_the_lines_a_killed_one_wrote(tmp_dir):
    proc = subprocess.Popen([PYTHON, "-c", KILLED_TRAINER], cwd=tmp_dir)
    path = tmp_dir / "r" / "system.jsonl"
    try:
        wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") >= 3, what="three samples")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before = read_system("r")
    assert len(before) >= 3
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"step": 99, "time": 1.2, "cpu_perc')  # what a kill mid-append would leave
    assert read_system("r") == before  # a reader skips the cut line

    with runforge.Run(out="r", resume=True, system_interval=0.2, tensorboard=False, progress=False) as run:
        run.poll(1)
        wait_for(lambda: path.read_bytes().count(b"\n") >= len(before) + 2, what="two samples after the resume")
    after = read_system("r")
    assert after[:len(before)] == before
    assert len(after) >= len(before) + 2
    assert path.read_bytes().startswith(whole)
    for line in path.read_bytes().splitlines():
        assert isinstance(json.loads(line), dict)  # the cut line was dropped, not glued to the next
