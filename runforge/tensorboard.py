"""`SummaryWriter`, the drop-in for `torch.utils.tensorboard.SummaryWriter` that writes a runforge run.

    from runforge.tensorboard import SummaryWriter      # was: from torch.utils.tensorboard import ...
    writer = SummaryWriter()                            # runs/{adjective}-{noun}-{N}_{id}/
    writer.add_scalar("loss/train", loss, step)         # train.jsonl {"loss/train": ...} + tb/
    writer.add_image("sample", img, step)               # images/step_0005_sample.png + tb/
    writer.close()

The run directory holds everything a runforge run holds (docs/run-layer.md) and its tb/ holds what
torch's writer would have written, so TensorBoard keeps working; docs/integrations.md has the table of
what maps to what. Neither torch nor numpy is imported here until a tensor, an array or a figure arrives.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .run.naming import ADJECTIVES, NOUNS, count_runs

__all__ = ["SummaryWriter"]

_RESERVED = {"step": "step_", "time": "time_"}
"""train.jsonl keeps `step` and `time` for itself: tags with those names get a trailing underscore."""
STALE_LINE_S = 1.0
"""A step's merged line waits for more tags of the same step about this long (up to twice) before it is logged."""
POLL_INTERVAL_S = 0.1
"""`Run.poll` (pause, stop, status.json's step timing) at most this often, on a step change."""
_UNRECORDED = ("add_graph", "add_embedding", "add_audio", "add_video", "add_pr_curve", "add_pr_curve_raw",
               "add_custom_scalars", "add_custom_scalars_multilinechart", "add_custom_scalars_marginchart",
               "add_mesh", "add_onnx_graph", "add_image_with_boxes", "add_tensor")
_unsafe = re.compile(r"[^A-Za-z0-9_.\-]")


def _file_name(tag: str) -> str:
    """A tag as a piece of a file name (Run's image and run names allow letters, digits, `_ . -`)."""
    return _unsafe.sub("_", tag).lstrip(".") or "_"


def _default_name(root: Path, comment: str) -> str | None:
    """runforge's `{adjective}-{noun}-{N}`, with torch's `comment` appended as torch appends it."""
    if not comment:
        return None
    import random

    rng = random.SystemRandom()
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{count_runs(root) + 1}{_file_name(comment)}"


def _free_dir(path: Path) -> Path:
    """`path`, or the first free `path-2`, `path-3`, ... when it already holds files: torch appends a
    second run to the first one's folder, where TensorBoard draws them as one tangled run."""
    candidate, n = path, 1
    while candidate.is_dir() and any(candidate.iterdir()):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _to_uint8_hwc(value: Any, dataformats: str) -> Any:
    """torch's reading of an image: `dataformats` (N)CHW/(N)HWC/HW order, a batch tiled 8 per row,
    uint8 as is and anything else times 255, clipped and truncated, as torch does."""
    import numpy as np

    array = _numpy(value)
    layout = dataformats.upper()
    if len(set(layout)) != len(layout) or set(layout) - set("NCHW") or array.ndim != len(layout):
        raise ValueError(f"dataformats {dataformats!r} does not fit an image of shape {tuple(array.shape)}")
    if "C" not in layout:
        array, layout = array[..., None], layout + "C"
    if "N" in layout:
        batch = array.transpose([layout.index(c) for c in "NHWC"])
        count, height, width, channels = batch.shape
        columns = min(count, 8)
        rows = -(-count // columns)
        grid = np.zeros((rows * height, columns * width, channels), dtype=batch.dtype)
        for i in range(count):
            y, x = divmod(i, columns)
            grid[y * height:(y + 1) * height, x * width:(x + 1) * width] = batch[i]
        array = grid
    else:
        array = array.transpose([layout.index(c) for c in "HWC"])
    if array.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {array.shape[2]} ({dataformats})")
    if array.dtype != np.uint8:
        array = (np.nan_to_num(array.astype(np.float32)) * 255.0).clip(0, 255).astype(np.uint8)
    return array[:, :, 0] if array.shape[2] == 1 else array


_TENSORFLOW_BINS: list[float] | None = None


def _tensorflow_bins() -> list[float]:
    """TensorBoard's default histogram edges: +-1e-12 growing by 10% up to 1e20, and 0."""
    global _TENSORFLOW_BINS
    if _TENSORFLOW_BINS is None:
        positive, edge = [], 1e-12
        while edge < 1e20:
            positive.append(edge)
            edge *= 1.1
        _TENSORFLOW_BINS = [-e for e in reversed(positive)] + [0.0] + positive
    return _TENSORFLOW_BINS


def _histogram(tag: str, values: Any, bins: Any, max_bins: int | None) -> bytes:
    """A Summary.Value for `values` (a float64 vector); empty buckets outside the data are left out."""
    import numpy as np

    from .run.tensorboard import histogram_value

    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(f"add_histogram {tag!r}: no finite values")
    counts, edges = np.histogram(values, bins=_tensorflow_bins() if bins == "tensorflow" else bins)
    if max_bins is not None and len(counts) > max_bins:
        group = -(-len(counts) // max_bins)
        padded = np.zeros(-(-len(counts) // group) * group, dtype=counts.dtype)
        padded[:len(counts)] = counts
        counts = padded.reshape(-1, group).sum(axis=1)
        edges = np.append(edges[:-1:group], edges[-1])
    filled = np.nonzero(counts)[0]
    if filled.size == 0:  # every value outside explicit bins
        first, last = 0, len(counts) - 1
    else:
        first, last = int(filled[0]), int(filled[-1])
    # a bucket is given by its right edge: an empty one in front keeps the left edge of the first
    limits = edges[first:last + 2].tolist()
    buckets = [0.0] + counts[first:last + 1].astype(float).tolist()
    return histogram_value(tag, float(values.min()), float(values.max()), float(values.size), float(values.sum()),
                           float(values.dot(values)), limits, buckets)


def _figure_to_hwc(figure: Any, close: bool) -> Any:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return rgb


def _plain(value: Any) -> Any:
    """A hyperparameter as JSON holds it (tensors and numpy scalars become numbers)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class _ExitStatus:
    """The uncaught exception that ends the interpreter, for writers closed by atexit."""

    exception: BaseException | None = None
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        cls.installed = True
        previous = sys.excepthook

        def hook(kind: Any, exc: BaseException, tb: Any) -> None:
            cls.exception = exc
            previous(kind, exc, tb)

        sys.excepthook = hook


class SummaryWriter:
    """torch's `SummaryWriter` API over a runforge `Run` (docs/integrations.md).

    Args:
        log_dir: the run directory. None: `runs/{adjective}-{noun}-{N}_{id}` (+ `comment`). A folder that
            already holds files is not appended to: the run goes to `{log_dir}-2` (`-3`, ...).
        comment: appended to the generated run name (ignored with `log_dir`, as torch does).
        purge_step, max_queue, flush_secs, filename_suffix: accepted and ignored (the run layer
            writes in the background every 0.2 s; a resumed run is runforge's `Run(resume=...)`).
        **run_options: passed to `runforge.Run` (`steps`, `config`, `root`, `name`, `trainer`, ...).
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, comment: str = "", purge_step: int | None = None,
                 max_queue: int = 10, flush_secs: int = 120, filename_suffix: str = "", **run_options: Any) -> None:
        from .run import Run

        # Terminal keys (cbreak mode) would take the script's own stdin: input() and pdb must keep it.
        options: dict[str, Any] = {"trainer": "summarywriter", "progress": False, "handle_signals": False,
                                   "terminal_keys": False}
        options.update(run_options)
        if log_dir:
            options["out"] = _free_dir(Path(log_dir))
        elif "out" not in options and "name" not in options:
            options["name"] = _default_name(Path(options.get("root", "runs")), comment)
        self._config: dict[str, Any] = dict(options.get("config") or {})
        self._run = Run(**options)
        self._started = time.time()
        self._lock = threading.Lock()
        self._step: int | None = None
        self._pending: dict[str, float] = {}
        self._poll_due = True
        self._log = self._run.log
        self._next_steps: dict[str, int] = {}
        self._closed = False
        self._done = threading.Event()
        self._stale = threading.Thread(target=self._tick, name="runforge-summarywriter", daemon=True)
        self._stale.start()
        _ExitStatus.install()
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------------ torch's attributes

    @property
    def log_dir(self) -> str:
        return str(self._run.dir)

    def get_logdir(self) -> str:
        return str(self._run.dir)

    @property
    def run(self) -> Any:
        """The `runforge.Run` underneath (poll it, checkpoint through it)."""
        return self._run

    # ------------------------------------------------------------------ scalars

    def add_scalar(self, tag: str, scalar_value: Any, global_step: Any = None, walltime: float | None = None,
                   new_style: bool = False, double_precision: bool = False) -> None:
        if global_step is None:
            step = self._next_steps.get(tag, 0)
            self._next_steps[tag] = step + 1
        else:
            step = global_step if type(global_step) is int else int(global_step)
        value = scalar_value if type(scalar_value) is float or type(scalar_value) is int else float(scalar_value)
        key = _RESERVED.get(tag, tag)
        with self._lock:
            pending = self._pending
            if step == self._step and key not in pending:
                pending[key] = value
                return
            if pending and not self._closed:
                self._log(self._step, pending)
            new_step = step != self._step
            self._step = step
            self._pending = {key: value}
        if new_step and self._poll_due and not self._closed:
            self._poll(step)

    def add_scalars(self, main_tag: str, tag_scalar_dict: dict[str, Any], global_step: Any = None,
                    walltime: float | None = None) -> None:
        for tag, value in tag_scalar_dict.items():
            self.add_scalar(f"{main_tag}/{tag}", value, global_step, walltime)

    def _log_pending(self) -> None:
        """Hand the merged line of the current step to the run (the caller holds the lock)."""
        if self._pending and not self._closed:
            self._log(self._step, self._pending)
        self._pending = {}

    def _poll(self, step: int) -> None:
        # pause/resume from the dashboard or `runforge ctl` hold the script here; `stop` acts like Ctrl-C
        self._poll_due = False
        if self._run.poll(step).stop:
            self._run.event("stop requested: KeyboardInterrupt raised in the script", console=True)
            raise KeyboardInterrupt("runforge: stop requested")

    def _tick(self) -> None:
        """Asks for a poll ten times a second (as often as the run layer looks for commands, at a
        fraction of the cost of one per step), and logs a step's line that waited a second for more
        tags: a script that logs once an epoch still shows its last point while the next epoch runs."""
        ticks = 0
        seen: dict[str, float] | None = None
        while not self._done.wait(POLL_INTERVAL_S):
            self._poll_due = True
            ticks += 1
            if ticks % round(STALE_LINE_S / POLL_INTERVAL_S):
                continue
            with self._lock:
                if self._pending and self._pending is seen:
                    try:
                        self._log_pending()
                    except Exception:
                        pass  # a run that cannot write raises in the script's next call instead
                seen = self._pending

    # ------------------------------------------------------------------ everything else in tb/

    def _step_of(self, tag: str, global_step: Any) -> int:
        """`global_step`, or for None the count of the tag's earlier calls without one (0, 1, 2, ...)."""
        if global_step is not None:
            return int(global_step)
        step = self._next_steps.get(tag, 0)
        self._next_steps[tag] = step + 1
        return step

    def _write_tb(self, kind: str, records: Callable[[], bytes]) -> None:
        if not self._closed:
            self._run.tensorboard_records(kind, records)

    def add_image(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:
        self._image(tag, _to_uint8_hwc(img_tensor, dataformats), self._step_of(tag, global_step))

    def add_images(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                   dataformats: str = "NCHW") -> None:
        self._image(tag, _to_uint8_hwc(img_tensor, dataformats), self._step_of(tag, global_step))

    def add_figure(self, tag: str, figure: Any, global_step: Any = None, close: bool = True,
                   walltime: float | None = None) -> None:
        if isinstance(figure, list):
            import numpy as np

            self.add_images(tag, np.stack([_figure_to_hwc(f, close) for f in figure]), global_step,
                            dataformats="NHWC")
        else:
            self.add_image(tag, _figure_to_hwc(figure, close), global_step, dataformats="HWC")

    def _image(self, tag: str, pixels: Any, step: int) -> None:
        """images/step_{step:04d}_{tag as a file name}.png, and an image event under the tag itself."""
        if not self._closed:
            self._run.image(step, _file_name(tag), pixels, tag=tag)

    def add_histogram(self, tag: str, values: Any, global_step: Any = None, bins: Any = "tensorflow",
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        from .run.tensorboard import summary_event

        import numpy as np

        data = _numpy(values).astype(np.float64).reshape(-1)  # a copy, binned on the writer thread
        step, wall = self._step_of(tag, global_step), time.time()
        self._write_tb(f"histogram {tag}", lambda: summary_event(wall, step, [_histogram(tag, data, bins, max_bins)]))

    def add_histogram_raw(self, tag: str, min: float, max: float, num: float, sum: float, sum_squares: float,
                          bucket_limits: Any, bucket_counts: Any, global_step: Any = None,
                          walltime: float | None = None) -> None:
        from .run.tensorboard import histogram_value, summary_event

        value = histogram_value(tag, float(min), float(max), float(num), float(sum), float(sum_squares),
                                [float(v) for v in bucket_limits], [float(v) for v in bucket_counts])
        step, wall = self._step_of(tag, global_step), time.time()
        self._write_tb(f"histogram {tag}", lambda: summary_event(wall, step, [value]))

    def add_text(self, tag: str, text_string: str, global_step: Any = None, walltime: float | None = None) -> None:
        from .run.tensorboard import summary_event, text_value

        step, wall = self._step_of(tag, global_step), time.time()
        if self._closed:
            return
        self._run.event(f"text {tag} at step {step}: {json.dumps(text_string, ensure_ascii=False)}")
        self._write_tb(f"text {tag}", lambda: summary_event(wall, step, [text_value(tag + "/text_summary",
                                                                                    text_string)]))

    def add_hparams(self, hparam_dict: dict[str, Any], metric_dict: dict[str, Any],
                    hparam_domain_discrete: dict[str, list[Any]] | None = None, run_name: str | None = None,
                    global_step: Any = None) -> None:
        from .run.tensorboard import hparams_values, summary_event

        if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
            raise TypeError("add_hparams: hparam_dict and metric_dict must be dictionaries")
        if self._closed:
            return
        hparams = {name: _plain(value) for name, value in hparam_dict.items()}
        domains = {name: [_plain(v) for v in values] for name, values in (hparam_domain_discrete or {}).items()}
        with self._lock:
            self._log_pending()
            step = self._step if global_step is None and self._step is not None else int(global_step or 0)
            self._step = step
        if metric_dict:
            self._run.log(step, {_RESERVED.get(k, k): float(v) for k, v in metric_dict.items()})
        self._config.update(hparams)
        self._run.save_json("config.json", self._config)
        started, wall = self._started, time.time()
        self._write_tb("hparams", lambda: summary_event(wall, step, hparams_values(
            hparams, list(metric_dict), started, wall, domains)))

    def __getattr__(self, name: str) -> Any:
        if name in _UNRECORDED:
            def unrecorded(*args: Any, **kwargs: Any) -> None:
                if name not in self.__dict__.setdefault("_warned", set()):
                    self._warned.add(name)
                    self._run.event(f"SummaryWriter.{name} is not recorded by runforge", "warning")
            return unrecorded
        raise AttributeError(name)

    # ------------------------------------------------------------------ ending

    def flush(self) -> None:
        """Everything logged so far reaches the disk (train.jsonl, images/, tb/)."""
        if self._closed:
            return
        with self._lock:
            self._log_pending()
        self._run.wait()

    def close(self) -> None:
        self._finish(None, None)

    def _finish(self, kind: Any, exc: BaseException | None) -> None:
        if self._closed:
            return
        with self._lock:
            self._log_pending()
            self._closed = True
        self._done.set()
        self._stale.join()
        atexit.unregister(self._close_at_exit)
        self._run.__exit__(kind, exc, None)

    def _close_at_exit(self) -> None:
        exc = _ExitStatus.exception
        self._finish(type(exc) if exc is not None else None, exc)

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._finish(kind, exc)
