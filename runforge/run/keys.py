"""Single keys in the trainer's terminal: `v` validate, `p` pause/resume, `s` save, `q` stop.

    keys = KeyReader(paused=lambda: run_is_paused)
    keys.start()            # no-op unless stdin is the foreground terminal (never under CI or pytest)
    ...
    for command in keys.take():   # control command names, oldest first
        ...
    keys.stop()             # also done at exit: the terminal is always given back as it was

The terminal is put in cbreak mode (keys arrive one by one, no echo; Ctrl-C
still raises SIGINT) and read on a daemon thread, so the training loop never
waits on it.
"""

from __future__ import annotations

import atexit
import os
import select
import sys
import threading
from typing import Callable

try:
    import termios
    import tty
except ImportError:  # Windows: no terminal keys
    termios = None  # type: ignore[assignment]
    tty = None  # type: ignore[assignment]

KEY_COMMANDS = {"v": "validate", "s": "save", "q": "stop"}
"""Keys with a fixed command; `p` toggles between pause and resume."""

NO_KEYS_VARIABLES = ("CI", "PYTEST_CURRENT_TEST", "RUNFORGE_NO_KEYS")
"""Environment variables that turn the key reader off even on a terminal."""


def keys_wanted() -> bool:
    """True when stdin is an interactive terminal and nothing asked for keys to stay off."""
    if termios is None or any(os.environ.get(name) for name in NO_KEYS_VARIABLES):
        return False
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class KeyReader:
    """Reads command keys from a terminal on a daemon thread.

    Args:
        paused: tells whether the run is paused now, so `p` becomes `pause` or `resume`.
    """

    def __init__(self, paused: Callable[[], bool]) -> None:
        self._paused = paused
        self._fd: int | None = None
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._saved_mode: list | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        """Begin reading keys; returns False (and does nothing) where keys are not wanted."""
        if self._thread is not None:
            return True
        if not keys_wanted():
            return False
        try:
            fd = sys.stdin.fileno()
            if os.tcgetpgrp(fd) != os.getpgrp():
                return False  # a background job: touching the terminal would stop the process (SIGTTOU)
            self._saved_mode = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        except (termios.error, OSError):
            self._saved_mode = None
            return False
        self._fd = fd
        self._wake = os.pipe()
        atexit.register(self._restore)
        self._thread = threading.Thread(target=self._read_loop, name="runforge-keys", daemon=True)
        self._thread.start()
        return True

    def take(self) -> list[str]:
        """The commands typed since the last call, oldest first."""
        with self._lock:
            commands, self._pending = self._pending, []
        return commands

    def stop(self) -> None:
        """Stop reading and give the terminal back its previous mode."""
        thread, self._thread = self._thread, None
        if thread is not None and self._wake is not None:
            os.write(self._wake[1], b"x")
            thread.join(timeout=1.0)
            for end in self._wake:
                os.close(end)
            self._wake = None
        self._restore()
        atexit.unregister(self._restore)

    def _restore(self) -> None:
        mode, self._saved_mode = self._saved_mode, None
        if mode is not None and self._fd is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSANOW, mode)
            except (termios.error, OSError):
                pass  # the terminal is gone (closed window): nothing to give back

    def _read_loop(self) -> None:
        assert self._fd is not None and self._wake is not None
        wake = self._wake[0]
        while True:
            try:
                ready, _, _ = select.select([self._fd, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                data = os.read(self._fd, 64)
            except OSError:
                return
            if not data:
                return  # end of input
            for key in data.decode("utf-8", "ignore").lower():
                self._press(key)

    def _press(self, key: str) -> None:
        with self._lock:
            if key == "p":
                # Presses not yet taken by the trainer count: `p p` quickly is pause then resume.
                toggles = [c for c in self._pending if c in ("pause", "resume")]
                paused = toggles[-1] == "pause" if toggles else self._paused()
                self._pending.append("resume" if paused else "pause")
            elif key in KEY_COMMANDS:
                self._pending.append(KEY_COMMANDS[key])
