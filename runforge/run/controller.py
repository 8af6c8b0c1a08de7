"""The live side of a run: step and ETA, status.json, pause/resume, commands and stop signals.

    controller = Controller(run_dir, step_max=1000, event=events.write)
    controller.start(handle_signals=True)     # SIGINT/SIGTERM become a graceful stop; terminal keys on
    ctl = controller.poll(step)               # once per step: may block while paused
    controller.write_status("running")        # status.json, at most once a second unless something changed
    controller.close()                        # signal handlers and the terminal given back

Commands come from the control folder (`runforge ctl`, the dashboard) and from
single keys in the trainer's terminal. `pause` and `resume` are handled here;
`stop` and the first SIGINT/SIGTERM set `stop_requested`; `validate` and `save`
are handed back to the training loop in the `Control` that `poll` returns.
`Run` owns one controller and delegates `poll`, `validating`, `set_status` and
`status_fields` to it.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import control, system
from .console import ProgressDisplay
from .files import dumps_pretty, sanitize, write_bytes
from .keys import KeyReader
from .layout import STATUS_FILE, SYSTEM_FILE

STATUS_INTERVAL_S = 1.0
"""status.json is rewritten at most this often while nothing but the step changes."""
CONTROL_INTERVAL_S = 0.1
"""The control folder is listed at most this often: a fast loop must not pay a directory scan per step."""


@dataclass(frozen=True)
class Control:
    """What `Run.poll` asks the trainer to do at this step boundary."""

    validate: bool = False
    save: bool = False
    stop: bool = False


_NOTHING = Control()


class Controller:
    """Step timing, pause state, pending commands and stop requests of one run.

    Args:
        run_dir: the run directory (control/ and status.json are inside it).
        is_main: only rank 0 reads commands and keys and writes status.json.
        step_max: the step count the run aims for (ETA); may be changed later.
        start_step: the step training starts from (the resume step, or 0).
        event: writes one line to events.log, as `EventLog.write`.
        progress: the progress display to update on every poll, if any.
        clock: seconds, monotonic; the iteration duration and ETA are measured with it.
        sampler: writes system.jsonl; ticked with every status.json heartbeat (the writer thread).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        is_main: bool = True,
        step_max: int | None = None,
        start_step: int = 0,
        event: Callable[..., None] = lambda message, level="info", console=False: None,
        progress: ProgressDisplay | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sampler: system.SystemSampler | None = None,
    ) -> None:
        self.dir = run_dir
        self.is_main = is_main
        self.step_max = step_max
        self.step = start_step
        self.epoch: int | None = None
        self.epoch_step: int | None = None
        self.epoch_step_total: int | None = None
        self.iteration_duration: float | None = None
        """Seconds per step, an exponential average over polls; pauses are not counted."""
        self.paused = False
        self.validation_running = False
        self.stop_requested = False
        self.stop_signal: int | None = None
        """The signal that asked for the stop (None for the `stop` command); the exit code is 128 + it."""
        self._event = event
        self._progress = progress
        self._clock = clock
        self._sampler = sampler
        self._closed = False
        self._poll_seen = False
        self._last_poll: float | None = None
        self._step_at_last_poll = start_step
        self._next_control_check = 0.0
        self._status_dirty = True
        self._last_status_write = 0.0
        self._extra_status: dict[str, Any] = {}
        self._keys = KeyReader(paused=lambda: self.paused)
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ lifetime

    def start(self, *, handle_signals: bool = True, terminal_keys: bool = True) -> None:
        """Read terminal keys (rank 0, and only on a terminal) and take over SIGINT/SIGTERM, each if asked."""
        if self.is_main and terminal_keys:
            self._keys.start()
        # Python only lets the main thread install handlers; a run opened elsewhere keeps the defaults.
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def close(self) -> None:
        """Give back the signal handlers and the terminal; status.json reports training inactive from now on."""
        self._closed = True
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}
        self._keys.stop()
        if self._progress is not None:
            self._progress.close()

    # ------------------------------------------------------------------ polling

    def poll(self, step: int | None = None, *, epoch: int | None = None, epoch_step: int | None = None,
             epoch_step_total: int | None = None, on_validate: Callable[[], Any] | None = None) -> Control:
        """See `Run.poll`."""
        self._poll_seen = True
        now = self._clock()
        if step is not None:
            if self._last_poll is not None and step > self._step_at_last_poll:
                per_step = (now - self._last_poll) / (step - self._step_at_last_poll)
                old = self.iteration_duration
                self.iteration_duration = per_step if old is None else 0.9 * old + 0.1 * per_step
            self.step = step
        self._last_poll = now
        self._step_at_last_poll = self.step
        if epoch is not None:
            self.epoch = epoch
        if epoch_step is not None:
            self.epoch_step = epoch_step
        if epoch_step_total is not None:
            self.epoch_step_total = epoch_step_total
        if self._progress is not None:
            self._progress.update(self.step, self.step_max, system.format_duration(self.eta()))
        if now < self._next_control_check and not self.stop_requested:
            return _NOTHING
        self._next_control_check = now + CONTROL_INTERVAL_S
        requests: set[str] = set()
        self._apply_commands(requests)
        while self.paused and not self.stop_requested:
            time.sleep(0.05)  # paused: hold the step, keep answering commands (the writer keeps the heartbeat)
            self._apply_commands(requests)
            if on_validate is not None and "validate" in requests:
                requests.discard("validate")
                on_validate()
        if self.paused and self.stop_requested:
            self._set_paused(False)
        if self.stop_requested or requests:
            return Control(validate="validate" in requests, save="save" in requests, stop=self.stop_requested)
        return _NOTHING

    def _apply_commands(self, requests: set[str]) -> None:
        for command, stem in self._pending_commands():
            if stem is not None:
                control.write_receipt(self.dir, stem, command, self.step)
            if command == "pause":
                self._set_paused(True)
            elif command == "resume":
                self._set_paused(False)
            elif command == "stop":
                self.request_stop(None)
            else:
                requests.add(command)

    def _pending_commands(self) -> list[tuple[str, str | None]]:
        if not self.is_main:
            return []
        return control.take(self.dir) + [(command, None) for command in self._keys.take()]

    def _set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._status_dirty = True
            self._event("training paused" if paused else "training resumed", console=True)
            if not paused:
                self._last_poll = self._clock()  # a pause is not an iteration

    # ------------------------------------------------------------------ stopping

    def request_stop(self, signum: int | None) -> None:
        """Ask the loop to stop after this step (`signum` None: the `stop` command)."""
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_signal = signum
            why = f"signal {signal.Signals(signum).name}" if signum else "stop command"
            self._event(f"stopping after this step ({why})", console=True)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested or not self._poll_seen:
            # A second signal, or a script that never polls: stop now, as Python would.
            self.stop_signal = signum
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.request_stop(signum)

    # ------------------------------------------------------------------ live state

    @contextmanager
    def validating(self) -> Iterator[None]:
        """Mark `validation_running` in status.json while the block runs."""
        self.validation_running = True
        self._status_dirty = True
        try:
            yield
        finally:
            self.validation_running = False
            self._status_dirty = True

    def set_status(self, **fields: Any) -> None:
        """Extra live fields for status.json."""
        self._extra_status.update(fields)

    def eta(self) -> float | None:
        """Seconds to `step_max` at the current iteration duration (None while either is unknown)."""
        if self.step_max is None or self.iteration_duration is None:
            return None
        return max(0, self.step_max - self.step) * self.iteration_duration

    def status_fields(self, step: int | None = None) -> dict[str, Any]:
        """The live state, as status.json carries it (and a snapshot, the parts its run declares)."""
        eta = self.eta()
        rss = system.rss_bytes()
        epoch_eta = None
        if self.epoch_step_total is not None and self.epoch_step is not None and self.iteration_duration is not None:
            epoch_eta = max(0, self.epoch_step_total - self.epoch_step) * self.iteration_duration
        fields: dict[str, Any] = {
            "step_current": self.step if step is None else step,
            "step_max": self.step_max,
            "epoch_num": self.epoch,
            "epoch_step_current": self.epoch_step,
            "epoch_step_total": self.epoch_step_total,
            "iteration_duration": self.iteration_duration,
            "eta_total_seconds": eta,
            "eta_total_formatted": system.format_duration(eta),
            "eta_epoch_formatted": system.format_duration(epoch_eta),
            "memory_rss_bytes": rss,
            "ram_usage_gb": None if rss is None else round(rss / 2**30, 3),
            "training_active": not self._closed and not self.paused,
            "training_paused": self.paused,
            "validation_running": self.validation_running,
            "last_update_time": time.time(),
        }
        vram = system.cuda_peak_gb()
        if vram is not None:
            fields["vram_usage_gb"] = vram
        fields.update(self._extra_status)
        return fields

    def write_status(self, status: str, *, force: bool = False) -> None:
        """Rewrite status.json when something changed, or a second has passed, or `force`; append a
        system.jsonl sample when one is due."""
        if self._sampler is not None:
            try:
                self._sampler.tick(self.step)
            except OSError as exc:  # fail soft: the heartbeat goes on, without system samples
                self._sampler = None
                self._event(f"⚠️  Failed to save {SYSTEM_FILE}, no more system samples: {exc}", "warning")
        now = time.monotonic()
        if not force and not self._status_dirty and now - self._last_status_write < STATUS_INTERVAL_S:
            return
        self._status_dirty = False
        self._last_status_write = now
        fields = self.status_fields()
        fields["status"] = status
        write_bytes(self.dir / STATUS_FILE, dumps_pretty(sanitize(fields)).encode("utf-8"), durable=False)
