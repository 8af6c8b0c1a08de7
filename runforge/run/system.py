"""Facts about this process and machine, read without psutil or torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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


def cuda_peak_gb() -> float | None:
    """The most CUDA memory this process has held at once, in GiB to 3 decimals (status.json's
    `vram_usage_gb`; the sr and splat trainers also write it into their own statistics); None when
    the process has not imported torch or has not started CUDA, so nothing here starts it."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


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
