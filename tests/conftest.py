import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_dir(tmp_path, monkeypatch):
    """Run the test inside its own empty directory (runs/ and maps/ land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def runforge_cmd(*args):
    return [PYTHON, "-m", "runforge", *map(str, args)]


def run_cli(*args, cwd=None, timeout=120, env=None):
    """Run the real `runforge` command in a subprocess; returns CompletedProcess with text output."""
    return subprocess.run(runforge_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def make_unwritable(path: Path) -> None:
    """Make `path` a folder nothing can be written into, even as root (a link to /sys, where root gets EACCES)."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        return
    if path.exists():
        path.rmdir()
    path.symlink_to("/sys")


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def kolmogorov_data(tmp_path_factory):
    """The tiny Kolmogorov dataset the kolmogorov tests share: 10 trajectories of 8 states at 16²."""
    import torch

    from runforge.trainers.kolmogorov.config import data_preset
    from runforge.trainers.kolmogorov.data import generate

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kdata")
    cfg = data_preset("tiny")
    cfg.trajectories, cfg.length = 10, 8
    generate(cfg, out, log=lambda _: None)
    return out


def tree_digest(path: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under `path` with its kind and bytes (links by target): equal digests, untouched tree."""
    digest: dict[str, tuple[str, bytes]] = {}
    for entry in sorted(Path(path).rglob("*")):
        name = str(entry.relative_to(path))
        if entry.is_symlink():
            digest[name] = ("link", os.readlink(entry).encode())
        elif entry.is_dir():
            digest[name] = ("dir", b"")
        else:
            digest[name] = ("file", entry.read_bytes())
    return digest


def write_file(path: Path, data: str | bytes) -> Path:
    """`data` (text as UTF-8) into `path`, its folders made: how the bad-input tests plant a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels in a few bytes (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
