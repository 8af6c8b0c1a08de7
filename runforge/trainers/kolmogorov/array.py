"""`runforge train kolmogorov --array N`: N runs in parallel, each in its own run directory.

As SDA's `@job(array=3)`: the run opened by the CLI becomes the array's record
(its config.json has `array: N`, its events.log the launches, `array.json` the
members), and N member runs with seeds seed, seed+1, ... are created beside it
under the same root, each with the usual `{name}_{id}` directory, atomically, so
they never collide. Backends: dawgz `async` (local process pool of `--workers`),
dawgz `slurm` (one Slurm array, as SDA on a cluster), or submitit (local executor).

`runforge train` calls `launch` in place of `train.train` when `config.launcher` names
this module; each member then runs `train.train` itself.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...config import build, to_dict
from ...run import Run
from ...run.files import write_json
from .config import Config, run_options

MEMBERS_DIR = "array"


def run_member(config: dict[str, Any], root: str, index: int, record: str) -> str:
    """One member run (in a worker process): open its Run under `root`, train, report its directory."""
    import torch

    from .train import train

    torch.set_num_threads(1)
    cfg = build(Config, None, config, source="array member key ")
    note = Path(record) / MEMBERS_DIR / f"member_{index}.json"
    with Run(trainer="kolmogorov", config=to_dict(cfg), root=root, progress=False, **run_options(cfg)) as run:
        write_json(note, {"index": index, "seed": cfg.seed, "dir": str(run.dir), "name": run.name, "id": run.id,
                          "pid": os.getpid(), "status": "running"})
        train(cfg, run)
    write_json(note, {"index": index, "seed": cfg.seed, "dir": str(run.dir), "name": run.name, "id": run.id,
                      "pid": os.getpid(), "status": run.status})
    if run.exit_code:
        raise RuntimeError(f"member {index} ({run.dir}) ended {run.status}")
    return str(run.dir)


def member_configs(cfg: Config) -> list[dict[str, Any]]:
    return [to_dict(replace(cfg, array=1, seed=cfg.seed + i)) for i in range(cfg.array)]


def launch(cfg: Config, run: Run) -> None:
    """The trainer contract's launch hook: start the members, wait for them (Slurm: for the
    submission), and record them in the array's run."""
    root = str(run.dir.parent.resolve())
    configs = member_configs(cfg)
    run.event(f"array: launching {cfg.array} runs under {root} with backend {cfg.backend}", console=True)
    if cfg.backend == "submitit":
        failures = _submitit(configs, root, run)
    else:
        failures = _dawgz(configs, root, run, cfg)
    members = []
    for i in range(cfg.array):
        note = run.dir / MEMBERS_DIR / f"member_{i}.json"
        members.append(json.loads(note.read_text(encoding="utf-8")) if note.exists() else
                       {"index": i, "status": "submitted" if cfg.backend == "slurm" else "not started"})
    write_json(run.dir / "array.json", {"backend": cfg.backend, "members": members, "failures": failures})
    for member in members:
        run.event(f"array member {member['index']}: {member.get('dir', '-')} ({member['status']})", console=True)
    if failures:
        raise RuntimeError(f"{len(failures)} of {cfg.array} array runs failed: " + "; ".join(failures))


def _dawgz(configs: list[dict[str, Any]], root: str, run: Run, cfg: Config) -> list[str]:
    from dawgz import array, job, schedule, set_dawgz_dir

    set_dawgz_dir(str(run.dir / ".dawgz"))
    settings: dict[str, Any] = {"cpus": 2, "ram": "16GB", "time": "24:00:00"}
    if cfg.backend == "slurm" and cfg.device != "cpu":
        settings["gpus"] = 1
    # the Slurm node runs this interpreter (same venv on the shared filesystem), not whatever `python` is on PATH
    member = job(run_member, name="kolmogorov", interpreter=shlex.quote(sys.executable), **settings)
    jobs = [member(config, root, i, str(run.dir)) for i, config in enumerate(configs)]
    kwargs = {"max_workers": cfg.workers} if cfg.backend == "async" else {}
    scheduler = schedule(array(*jobs, name="kolmogorov_array"), backend=cfg.backend, name=f"kolmogorov-{run.id}",
                         quiet=True, **kwargs)
    if cfg.backend == "slurm":
        run.event("array: submitted to Slurm; members report into array/ as they start", console=True)
    return [f"{job}: {trace.strip().splitlines()[-1] if trace.strip() else 'failed'}"
            for job, trace in scheduler.traces.items()]


def _submitit(configs: list[dict[str, Any]], root: str, run: Run) -> list[str]:
    import submitit

    executor = submitit.AutoExecutor(folder=str(run.dir / "submitit" / "%j"), cluster="local")
    executor.update_parameters(timeout_min=24 * 60, cpus_per_task=1, gpus_per_node=0)
    jobs = executor.map_array(run_member, configs, [root] * len(configs), list(range(len(configs))),
                              [str(run.dir)] * len(configs))
    failures = []
    for i, member in enumerate(jobs):
        try:
            member.result()
        except Exception as exc:  # a member's failure is reported, the others are still awaited
            failures.append(f"member {i}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}")
    return failures
