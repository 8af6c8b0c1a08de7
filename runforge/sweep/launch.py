"""Running the points of a sweep through submitit and keeping sweep.json up to date.

    {root}/{name}/sweep.json          what was swept and how each point went (rewritten atomically)
    {root}/{name}/{point name}/       one ordinary run per point (`runforge train TRAINER --out ...`)
    {root}/{name}/.submitit/          submitit's pickles and each point's stdout/stderr log

Only this process writes sweep.json, so its rewrites never race. The points' processes are
submitit jobs: on the local executor this process starts at most `jobs` at a time; on Slurm they
are one job array whose `%jobs` suffix limits how many run at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..run.events import utc_now
from ..run.files import write_json
from ..run.layout import RUN_FILE, SWEEP_FILE
from .points import Point

SUBMITIT_DIR = ".submitit"
POLL_S = 0.2
STOP_WAIT_S = 120.0
"""How long an interrupted sweep waits for its running points to stop gracefully (checkpoint, run.json)."""
NO_TIME_LIMIT_MIN = 10 * 365 * 24 * 60
LOSS_KEYS = ("loss", "loss_valid", "val.loss", "val_loss", "loss_train", "train_loss")


def run_point(argv: list[str]) -> int:
    """One point, in its own process (a submitit job): `runforge train` with the point's flags."""
    from ..cli import main

    sys.argv = [sys.executable, "-m", "runforge", *argv]  # run.json's `command`: how to start it again
    return main(argv)


@dataclass
class Executor:
    kind: str
    jobs: int
    time_min: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "jobs": self.jobs, "time_min": self.time_min, **self.slurm}

    def make(self, folder: Path) -> Any:
        import submitit

        executor = submitit.AutoExecutor(folder=str(folder), cluster=self.kind)
        if self.kind == "local":
            # Ctrl-C reaches every process of the terminal's group: submitit's local controller would answer
            # it by killing its point a second later, mid-checkpoint. Ignoring SIGINT there leaves the point
            # (which sets its own handler) to stop gracefully.
            executor.update_parameters(timeout_min=self.time_min or NO_TIME_LIMIT_MIN, local_setup=["trap '' INT"])
        else:
            params = {"timeout_min": self.time_min or 24 * 60, "slurm_array_parallelism": self.jobs,
                      "cpus_per_task": self.slurm.get("cpus", 2), "name": f"runforge-{folder.parent.name}"[:60]}
            if self.slurm.get("gpus"):
                params["gpus_per_node"] = self.slurm["gpus"]
            if self.slurm.get("mem_gb") is not None:
                params["mem_gb"] = self.slurm["mem_gb"]
            if self.slurm.get("partition"):
                params["slurm_partition"] = self.slurm["partition"]
            executor.update_parameters(**params)
        return executor


class Sweep:
    """sweep.json and the loop that runs the points."""

    def __init__(self, folder: Path, record: dict[str, Any], points: list[Point], argvs: list[list[str]],
                 executor: Executor) -> None:
        self.folder = folder
        self.record = record
        self.points = points
        self.argvs = argvs
        self.executor = executor
        self.entries: list[dict[str, Any]] = record["points"]

    def save(self) -> None:
        write_json(self.folder / SWEEP_FILE, self.record)

    def run(self) -> int:
        """Run every point, waiting for all; 0 when all finished, 1 otherwise."""
        self.record.update(status="running", started_at=utc_now())
        self.save()
        executor = self.executor.make(self.folder / SUBMITIT_DIR)
        jobs: dict[int, Any] = {}
        previous = signal.getsignal(signal.SIGTERM)
        if previous is not None:
            signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed sweep stops its points as Ctrl-C does
        try:
            if self.executor.kind == "local":
                self._run_local(executor, jobs)
            else:
                self._run_array(executor, jobs)
        except KeyboardInterrupt:
            self._stop(jobs)
            self.record.update(status="interrupted", ended_at=utc_now())
            self.save()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        failed = [e for e in self.entries if e["status"] != "finished"]
        self.record.update(status="failed" if failed else "finished", ended_at=utc_now())
        self.save()
        return 1 if failed else 0

    def _run_local(self, executor: Any, jobs: dict[int, Any]) -> None:
        waiting = list(range(len(self.points)))
        while waiting or jobs:
            while waiting and len(jobs) < self.executor.jobs:
                i = waiting.pop(0)
                jobs[i] = executor.submit(run_point, self.argvs[i])
                self._started(i, jobs[i])
            self._collect(jobs)
            time.sleep(POLL_S)

    def _run_array(self, executor: Any, jobs: dict[int, Any]) -> None:
        for i, job in enumerate(executor.map_array(run_point, self.argvs)):
            jobs[i] = job
            self._started(i, job, status="submitted")
        while jobs:
            self._collect(jobs)
            time.sleep(POLL_S)

    def _started(self, i: int, job: Any, status: str = "running") -> None:
        self.entries[i].update(status=status, job_id=str(job.job_id), started_at=utc_now(),
                               log=_relative(job.paths.stdout, self.folder))
        self.save()

    def _collect(self, jobs: dict[int, Any]) -> None:
        for i, job in list(jobs.items()):
            if job.done():
                del jobs[i]
                self._finished(i, job)

    def _finished(self, i: int, job: Any) -> None:
        entry = self.entries[i]
        exit_code, error = None, None
        try:
            exit_code = int(job.result())
        except Exception as exc:  # the job died or raised: its last line says why
            error = _last_line(str(exc)) or type(exc).__name__
        if exit_code:
            error = _last_line(_read(job.paths.stderr)) or f"exit code {exit_code}"
        run_dir = self.folder / entry["dir"]
        run_status = _run_status(run_dir)
        status = "finished" if exit_code == 0 and run_status == "finished" else (
            run_status if run_status in ("failed", "interrupted") else "failed")
        entry.update(status=status, exit_code=exit_code, error=error if status != "finished" else None,
                     ended_at=utc_now(), **final_metrics(run_dir))
        self.save()

    def _stop(self, jobs: dict[int, Any]) -> None:
        """Ask the running points to stop as `runforge ctl RUN stop` does (a checkpoint, then run.json says
        interrupted), wait for them, then end what is left; points never started are marked so."""
        from ..run import control

        for i in jobs:
            run_dir = self.folder / self.entries[i]["dir"]
            if run_dir.is_dir():
                try:
                    control.send(run_dir, "stop")
                except OSError:
                    pass
            _signal_run(run_dir, signal.SIGTERM)  # a point between polls stops at its next one either way
        deadline = time.monotonic() + STOP_WAIT_S
        try:
            while jobs and time.monotonic() < deadline:
                self._collect(jobs)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting
        for i, job in jobs.items():
            _signal_run(self.folder / self.entries[i]["dir"], signal.SIGKILL)
            try:
                job.cancel(check=False)
            except Exception:  # scancel failing leaves the job to Slurm; the point is still recorded
                pass
            self.entries[i].update(status="interrupted", ended_at=utc_now(),
                                   **final_metrics(self.folder / self.entries[i]["dir"]))
        for entry in self.entries:
            if entry["status"] == "pending":
                entry["status"] = "not started"


def _signal_run(run_dir: Path, signum: int) -> None:
    """Signal a point's training process on this host (run.json's pid, checked against its start time)."""
    from ..run import system
    from ..run.files import read_json_object

    try:
        info = read_json_object(run_dir / RUN_FILE)
        pid = int(info["pid"])
        if info.get("host") == system.host() and info.get("status") == "running" and \
                system.pid_alive(pid, info.get("pid_start")):
            os.kill(pid, signum)
    except Exception:  # no run yet, another host, or gone already
        pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return str(path)


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None


def _run_status(run_dir: Path) -> str | None:
    from ..run.read import summarize

    if not (run_dir / RUN_FILE).exists():
        return None
    try:
        return summarize(run_dir).status
    except Exception:  # a damaged run.json is a failed point, not a failed sweep
        return None


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """`final_step` and `final_metrics` (the last logged value of every numeric metric, nested keys
    joined with '.') of a run; empty when it logged nothing."""
    from ..run.metrics import read_metrics

    try:
        lines = read_metrics(run_dir)
    except Exception:  # a point without a log (it never started) has no metrics
        return {"final_step": None, "final_metrics": {}}
    last: dict[str, Any] = {}
    for line in lines:
        _flatten(line, "", last)
    last.pop("time", None)
    step = last.pop("step", None)
    return {"final_step": step, "final_metrics": last}


def _flatten(values: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{key}.", out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value


def final_loss(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """The metric the summary shows: the first of LOSS_KEYS logged, else the first key holding 'loss'."""
    for key in LOSS_KEYS:
        if key in metrics:
            return key, metrics[key]
    for key, value in metrics.items():
        if "loss" in key:
            return key, value
    return None
