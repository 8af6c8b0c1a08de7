"""Facts about this process and machine, read without psutil or torch."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .layout import SYSTEM_FILE

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

SYSTEM_INTERVAL_S = 10.0
"""Seconds between two lines of system.jsonl (`Run(system_interval=...)`)."""


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def _cuda_torch() -> Any:
    """torch, when the process imported it and started CUDA; None otherwise, so nothing here starts it."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch


def cuda_peak_gb() -> float | None:
    """The most CUDA memory this process has held at once, in GiB to 3 decimals (status.json's
    `vram_usage_gb`; the sr and splat trainers also write it into their own statistics); None when
    the process has not imported torch or has not started CUDA."""
    torch = _cuda_torch()
    return None if torch is None else round(torch.cuda.max_memory_allocated() / 2**30, 3)


def cuda_now() -> dict[str, float]:
    """GPU memory allocated and reserved now (GiB, the current device) and its utilisation in %; {} without
    CUDA started. Utilisation only when pynvml is installed (torch asks NVML for it)."""
    torch = _cuda_torch()
    if torch is None:
        return {}
    figures = {"gpu_mem_allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 3),
               "gpu_mem_reserved_gb": round(torch.cuda.memory_reserved() / 2**30, 3)}
    import importlib.util

    if importlib.util.find_spec("pynvml") is not None:
        try:
            figures["gpu_util_percent"] = float(torch.cuda.utilization())
        except Exception:  # NVML refuses (no driver access, a MIG slice): the memory figures still count
            pass
    return figures


def cpu_seconds() -> float | None:
    """User + system CPU time of this process, all threads, from /proc/self/stat; None without /proc."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
    except (OSError, ValueError, IndexError):
        return None


def ram_used_percent() -> float | None:
    """The machine's memory in use (total - available) in %, from /proc/meminfo; None without it."""
    found: dict[bytes, int] = {}
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in (b"MemTotal", b"MemAvailable"):
                    found[key] = int(rest.split()[0])
        total = found[b"MemTotal"]
        return round(100.0 * (total - found[b"MemAvailable"]) / total, 2)
    except (OSError, ValueError, IndexError, KeyError, ZeroDivisionError):
        return None


class SystemSampler:
    """Appends one line of process and machine figures to `path` (system.jsonl) every `interval` seconds.

    `tick(step)` is called by the writer thread's heartbeat (every 0.2 s), so `Run.log` never pays
    for it; a sample reads three small /proc files. `elapsed()` gives the line's `time`, the run's
    seconds of training, as train.jsonl's. CPU % is the process's CPU time over the wall time since
    the sample before (100 = one core busy)."""

    def __init__(self, path: Path, interval: float, elapsed: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval = interval
        self._elapsed = elapsed
        self._clock = clock
        self._last_wall = clock()
        self._last_cpu = cpu_seconds()
        self._next = self._last_wall + interval
        self._tail_checked = False

    def tick(self, step: int) -> None:
        """Write a sample when one is due."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval
            self.append(self.sample(step, now))

    def sample(self, step: int, now: float) -> dict[str, Any]:
        cpu = cpu_seconds()
        cpu_percent = None
        if cpu is not None and self._last_cpu is not None and now > self._last_wall:
            cpu_percent = round(100.0 * (cpu - self._last_cpu) / (now - self._last_wall), 1)
        self._last_wall, self._last_cpu = now, cpu
        return {"step": step, "time": round(self._elapsed(), 3), "wall": round(time.time(), 3),
                "cpu_percent": cpu_percent, "rss_bytes": rss_bytes(), "ram_percent": ram_used_percent(), **cuda_now()}

    def append(self, sample: dict[str, Any]) -> None:
        with open(self.path, "a+b") as f:
            if not self._tail_checked:  # once per process: a resumed run appends after what a kill left
                self._tail_checked = True
                _drop_cut_line(f)
            f.write(json.dumps(sample, separators=(",", ":")).encode("utf-8") + b"\n")


def _drop_cut_line(f: BinaryIO) -> None:
    """A process killed while appending may leave part of a line at the end: cut it off, so the
    next line starts on a line of its own (readers skip a cut last line anyway)."""
    size = f.seek(0, os.SEEK_END)
    start = max(0, size - 65536)  # a line is ~200 bytes
    f.seek(start)
    tail = f.read()
    if tail and not tail.endswith(b"\n"):
        f.truncate(start + tail.rfind(b"\n") + 1)


def read_system(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The samples of system.jsonl (`run_dir` may also be the file), oldest first; [] when there is none.
    Lines that are not a JSON object are skipped, as `scan_metrics` reads train.jsonl."""
    from .metrics import scan_metrics

    path = Path(run_dir)
    if path.is_dir():
        path = path / SYSTEM_FILE
    return scan_metrics(path)[0]


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot; tells a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    if start_ticks is not None:
        now = process_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False  # the pid was reused by another process
    # A zombie has exited but not been reaped: it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def git_commit(cwd: str | os.PathLike[str] = ".") -> str | None:
    import subprocess  # ~4 ms to import; `from runforge import Run` should not pay for it up front

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def versions() -> dict[str, Any]:
    import platform  # off the import path: only a run opening or closing asks

    from .. import __version__

    torch_module = sys.modules.get("torch")  # reported only if the trainer already imported it
    return {
        "python": platform.python_version(),
        "torch": getattr(torch_module, "__version__", None),
        "runforge": __version__,
    }


def host() -> str:
    if hasattr(os, "uname"):  # the same name gethostname() gives, without importing socket
        return os.uname().nodename
    import socket

    return socket.gethostname()


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]


def format_duration(seconds: float | None) -> str | None:
    """H:MM:SS, as status.json and the snapshots show an ETA."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
