"""Opening a run directory: creating a new run, or resuming one.

    opening = open_run(OpenRequest(trainer="toy", config=config, out="runs/a", resume=True,
                                   load_checkpoint=torch_load))
    opening.dir, opening.start_step, opening.resume_state     # what `Run` starts from

A resume happens in two steps. `plan_resume` only reads: it finds the checkpoint,
loads it through the caller's `load_checkpoint`, reads run.json and works out which
lines of train.jsonl come after the checkpoint. Anything wrong there raises before
the first write, so a refused resume leaves the run byte-for-byte as it was.
`record_resume` then repairs the checkpoint folder, cuts train.jsonl, writes a
changed config beside the old one and appends the resume to run.json.

Ranks other than 0 wait for rank 0's directory and only find and load their own
checkpoint; the files of the run are rank 0's to write.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import BadInputError, RunExistsError, RunNotFoundError
from . import system
from .checkpoints import CheckpointInfo, CheckpointManager
from .events import EventLog, utc_now
from .files import dumps_pretty, read_json_object, sanitize, write_bytes, write_json
from .layout import (CONFIG_FILE, CONTROL_DIR, IMAGES_DIR, METRICS_FILE, RUN_FILE, SNAPSHOT_DIR,
                     SNAPSHOT_PATTERN)
from .metrics import Truncation, plan_truncation
from .snapshot_fields import declare as declare_snapshot_groups
from .naming import create_run_dir, find_run_dir, make_dir, new_id, rendezvous, wait_for_run

RESUME_NEEDS_A_RUN = "--resume needs a run directory or checkpoint (or --out DIR)"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
"""A run or image name: it becomes part of a file name, so no separators and nothing shell-special."""
GIT_TIMEOUT_S = 2.0
"""A run never waits longer than this on git (a huge repository, a hung network filesystem)."""


@dataclass(frozen=True)
class OpenRequest:
    """What the caller of `Run` asked for (see `Run` for each argument)."""

    trainer: str = "script"
    config: dict[str, Any] = field(default_factory=dict)
    root: str | os.PathLike[str] = "runs"
    out: str | os.PathLike[str] | None = None
    name: str | None = None
    resume: bool | str | os.PathLike[str] = False
    overwrite: bool = False
    rank: int = 0
    world_size: int = 1
    step_max: int | None = None
    images_dir: str = IMAGES_DIR
    snapshot_dir: str = SNAPSHOT_DIR
    snapshot_pattern: str = SNAPSHOT_PATTERN
    snapshot_groups: Mapping[str, Sequence[str]] | None = None
    checkpoint_options: dict[str, Any] | None = None
    load_checkpoint: Callable[[Path], Any] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Opening:
    """What opening found and decided: the run's identity and where training starts again."""

    dir: Path
    """Absolute, not resolved: a run reached through a link keeps the link's path."""
    name: str
    id: str
    resumed: bool
    checkpoints: CheckpointManager
    events: EventLog
    info: dict[str, Any] = field(default_factory=dict)
    """run.json as last written; empty on ranks other than 0."""
    start_step: int = 0
    resume_checkpoint: CheckpointInfo | None = None
    resume_state: Any = None
    elapsed: float = 0.0
    """Seconds the run had trained before (the last kept `time` of train.jsonl); its clock goes on from there."""
    dropped_lines: int = 0


@dataclass(frozen=True)
class ResumePlan:
    """Everything a resume needs, read and checked; nothing of the run has been changed yet."""

    given: Path | None
    """The checkpoint file the user named, or None to continue from the latest."""
    checkpoint: CheckpointInfo | None
    state: Any
    info: dict[str, Any]
    truncation: Truncation | None
    """None on ranks other than 0, which do not own train.jsonl."""

    @property
    def start_step(self) -> int:
        return self.checkpoint.step if self.checkpoint else 0


def open_run(request: OpenRequest) -> Opening:
    """Create the run directory or resume the one the request names; raises before touching a run it refuses."""
    declare_snapshot_groups(request.snapshot_groups)  # a bad declaration or config fails before the disk is touched
    config_text = dumps_pretty(sanitize(request.config))
    if request.name is not None and (not SAFE_NAME.match(request.name) or request.name.startswith(".")):
        raise BadInputError(None, f"--name {request.name!r}: must be a plain name of letters, digits, '_', '.' "
                                  "and '-' (not a path, not starting with '.')")
    run_dir, name, run_id, resumed = claim_dir(request)
    run_dir = Path(os.path.abspath(run_dir))
    opening = Opening(
        dir=run_dir,
        name=name,
        id=run_id,
        resumed=resumed,
        checkpoints=CheckpointManager(run_dir, rank=request.rank, **(request.checkpoint_options or {})),
        events=EventLog(run_dir, enabled=request.is_main),
    )
    if resumed:
        plan = plan_resume(opening, request.resume, request.load_checkpoint, is_main=request.is_main)
        record_resume(opening, plan, request, config_text)
    elif request.is_main:
        record_new(opening, request, config_text)
    return opening


def claim_dir(request: OpenRequest) -> tuple[Path, str, str, bool]:
    """The run directory, its name and id, and whether it is a resume; a new run's directory is created here."""
    out, resume = request.out, request.resume
    if resume not in (False, True, None, ""):
        target = Path(resume)  # type: ignore[arg-type]
        run_dir = target if target.is_dir() else find_run_dir(target)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise BadInputError(target, f"belongs to run {run_dir}, not to --out {out}")
        out, resume = run_dir, True
    root = Path(request.root)
    if not request.is_main:
        run_dir = Path(out) if out is not None else rendezvous(root, None)
        info = wait_for_run(run_dir)
        return run_dir, info.get("name", run_dir.name), info.get("id", ""), bool(resume)
    if out is None:
        if resume:
            raise BadInputError(None, RESUME_NEEDS_A_RUN)
        path, run_name, run_id = create_run_dir(root, request.name)
        if request.world_size > 1:
            rendezvous(root, path)
        return path, run_name, run_id, False
    out = Path(out)
    run_file = out / RUN_FILE
    if out.exists() and not out.is_dir():
        raise BadInputError(out, "is a file, not a run directory")
    if run_file.exists():
        info = read_json_object(run_file)
        if resume:
            return out, info.get("name", out.name), info.get("id", ""), True
        if not request.overwrite:
            raise RunExistsError(f"{out}: already holds a run; pass --resume to continue it or --overwrite to replace it")
        import shutil  # only an overwrite needs it

        shutil.rmtree(out)
    elif resume:
        raise RunNotFoundError(f"{out}: no run to resume here ({RUN_FILE} is missing)")
    elif out.exists() and any(out.iterdir()) and not request.overwrite:
        raise RunExistsError(f"{out}: exists, is not empty and is not a run; choose another --out or pass --overwrite")
    make_dir(out)
    if request.world_size > 1:
        rendezvous(root, out)
    return out, request.name or out.name, new_id(), False


def git_state(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """{commit, dirty} of the git repository the working directory is in (where a script and the code it
    imports usually live; runforge's own trainers count when run from their checkout); None outside a
    repository, without git, or when git is slow. `dirty`: tracked files differ from the commit
    (untracked files, such as the runs folder, do not count)."""
    import subprocess  # ~4 ms to import: paid when a run opens, not by `from runforge import Run`

    try:
        done = subprocess.run(  # --no-optional-locks: never takes the index lock another git process holds
            ["git", "--no-optional-locks", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    commit, dirty = None, False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            commit = None if oid == "(initial)" else oid
        elif line and not line.startswith("#"):
            dirty = True
    return {"commit": commit, "dirty": dirty}


def record_new(opening: Opening, request: OpenRequest, config_text: str) -> None:
    """Write run.json, config.json and the control folder of a new run (rank 0 only)."""
    git = git_state()
    opening.info = {
        "id": opening.id,
        "name": opening.name,
        "trainer": request.trainer,
        "status": "running",
        "created_at": utc_now(),
        "finished_at": None,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "git_commit": git["commit"] if git else None,
        "git": git,
        "host": system.host(),
        "pid": os.getpid(),
        "pid_start": system.process_start_ticks(os.getpid()),
        "versions": system.versions(),
        "world_size": request.world_size,
        "images_dir": request.images_dir,
        "snapshot_dir": request.snapshot_dir,
        "snapshot_pattern": request.snapshot_pattern,
        "snapshot_groups": declare_snapshot_groups(request.snapshot_groups),
        "step": 0,
        "step_max": request.step_max,
        "error": None,
        "failed_writes": {},
        "resumes": [],
    }
    write_json(opening.dir / RUN_FILE, opening.info)
    write_bytes(opening.dir / CONFIG_FILE, config_text.encode("utf-8"))
    (opening.dir / CONTROL_DIR).mkdir(exist_ok=True)
    opening.events.write(f"run {opening.name}_{opening.id} started ({request.trainer}) in {opening.dir}")


def plan_resume(
    opening: Opening,
    resume: bool | str | os.PathLike[str],
    load_checkpoint: Callable[[Path], Any] | None,
    *,
    is_main: bool = True,
) -> ResumePlan:
    """Find and load the checkpoint to continue from and plan the cut of train.jsonl; reads only.

    A checkpoint `load_checkpoint` cannot read is a `BadInputError` naming the file.
    """
    checkpoints = opening.checkpoints
    given = Path(resume) if isinstance(resume, (str, os.PathLike)) and not Path(resume).is_dir() else None
    if given is not None:
        checkpoint = checkpoints.find(given)
        if checkpoint is None:
            raise BadInputError(given, "is not a checkpoint listed in this run's index")
    else:
        checkpoint = checkpoints.latest()
    state = None
    if checkpoint is not None and load_checkpoint is not None:
        try:
            state = load_checkpoint(checkpoint.path)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise BadInputError(checkpoint.path, f"cannot be loaded as a checkpoint "
                                                 f"({type(exc).__name__}: {first_line})") from exc
    info: dict[str, Any] = {}
    truncation = None
    if is_main:
        info = read_json_object(opening.dir / RUN_FILE)
        truncation = plan_truncation(opening.dir / METRICS_FILE, checkpoint.step if checkpoint else 0)
    return ResumePlan(given, checkpoint, state, info, truncation)


def record_resume(opening: Opening, plan: ResumePlan, request: OpenRequest, config_text: str) -> None:
    """Carry out `plan`: repair the checkpoint folder, cut train.jsonl, record the resume in run.json."""
    checkpoints = opening.checkpoints
    opening.start_step = plan.start_step
    opening.resume_checkpoint = plan.checkpoint
    opening.resume_state = plan.state
    repairs = checkpoints.recover()
    if plan.checkpoint is not None and plan.checkpoint.path.name.startswith("."):
        # it was read from a staged file that `recover` has just moved into place under its own name
        opening.resume_checkpoint = checkpoints.find(plan.given) if plan.given else checkpoints.latest()
    if not request.is_main:
        return
    assert plan.truncation is not None
    run_dir, events = opening.dir, opening.events
    for line in repairs:
        events.write(f"checkpoint recovery: {line}")
    plan.truncation.apply()
    dropped = plan.truncation.dropped
    old_config = (run_dir / CONFIG_FILE).read_text(encoding="utf-8") if (run_dir / CONFIG_FILE).exists() else None
    info = opening.info = plan.info
    resumes = info.setdefault("resumes", [])
    config_file = None
    if old_config != config_text:
        config_file = f"config.resume-{len(resumes) + 1}.json"
        write_bytes(run_dir / config_file, config_text.encode("utf-8"))
    checkpoint = opening.resume_checkpoint
    resumes.append({"at": utc_now(), "step": opening.start_step, "dropped_lines": dropped, "config": config_file,
                    "checkpoint": str(checkpoint.path) if checkpoint else None})
    info.update(status="running", finished_at=None, error=None, pid=os.getpid(),
                pid_start=system.process_start_ticks(os.getpid()), host=system.host(),
                command=list(sys.argv), step=opening.start_step, step_max=request.step_max,
                snapshot_groups=declare_snapshot_groups(request.snapshot_groups))  # what snapshots carry from now on
    write_json(run_dir / RUN_FILE, info)
    (run_dir / CONTROL_DIR).mkdir(exist_ok=True)
    where = f"checkpoint {checkpoint.path.name}" if checkpoint else "the start (no checkpoint)"
    events.write(f"resumed from {where} at step {opening.start_step}; dropped {dropped} later line(s) of {METRICS_FILE}")
    opening.elapsed = plan.truncation.last_time
    opening.dropped_lines = dropped
