"""`runforge assimilate RUN --obs coarse|sparse`: score-based data assimilation on held-out trajectories.

For each test trajectory x (L states), observe y = A(x) + noise, sample the posterior
p(x | y) with the run's score network assembled over the whole trajectory and SDA's
Gaussian likelihood score, and compare the posterior mean with an interpolation of y.

Everything (the run, the data, the flags that depend on them, OUT) is checked before the sampling;
OUT is made only when there are results. Writes into OUT (default RUN/assimilation/{obs}_x{factor}_t{first}):
    figures.json     errors of the posterior mean, the samples and the baseline (per trajectory and mean)
    vorticity.png    rows: truth, observation (interpolated), posterior samples, posterior mean, baseline
    posterior.h5     truth, y, samples, mean and baseline arrays
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...config import load_file, to_dict
from ...errors import BadInputError
from ...run.files import write_json
from ...run.layout import CONFIG_FILE, RUN_FILE
from ...run.naming import make_dir
from ...run.read import read_info
from ..common import check_output, load_model_state, load_torch_file, pick_device, write_png
from .config import AssimilateConfig, Config
from .data import load_split
from .dataset_check import check_grid
from .figures import grid
from .score import VPSDE, GaussianPosterior, MarkovScore, make_score
from .solver import coarsen, vorticity
from .train import STATE_FILE

OUTPUT_FILES = ("figures.json", "vorticity.png", "posterior.h5")


@dataclass
class Observation:
    """y = A(x) on trajectories (..., L, 2, N, N), and the interpolation baseline that inverts it."""

    kind: str
    factor: int
    every: int

    def __call__(self, x: Tensor) -> Tensor:
        if self.kind == "coarse":
            return coarsen(x, self.factor)
        return x[..., :: self.every, :, :: self.factor, :: self.factor]

    def interpolate(self, y: Tensor, length: int, size: int) -> Tensor:
        """Periodic bicubic interpolation in space (and linear in time for sparse states): (L, 2, N, N)."""
        if self.kind == "coarse":
            return periodic_upsample(y, self.factor, align_corners=False)
        fields = periodic_upsample(y, self.factor, align_corners=True)  # (L', 2, N, N) at the observed times
        times = torch.arange(0, length, self.every)[: len(fields)].double()
        out = torch.empty(length, *fields.shape[1:], dtype=fields.dtype)
        for i in range(length):
            j = int(torch.searchsorted(times, torch.tensor(float(i)), right=True)) - 1
            if j >= len(times) - 1:
                out[i] = fields[-1]
            else:
                frac = (i - times[j]) / (times[j + 1] - times[j])
                out[i] = (1 - frac) * fields[j] + frac * fields[j + 1]
        return out


def periodic_upsample(y: Tensor, factor: int, align_corners: bool, pad: int = 2) -> Tensor:
    """Bicubic upsampling by `factor` of periodic fields (..., n, n) -> (..., n * factor, n * factor).

    align_corners=False: y are block means (cell centres of blocks); True: y are point samples at
    indices 0, factor, 2 factor ... of the fine grid.
    """
    lead, n = y.shape[:-2], y.shape[-1]
    flat = F.pad(y.reshape(-1, 1, n, n), (pad, pad, pad, pad), mode="circular")
    if align_corners:
        size = (n + 2 * pad - 1) * factor + 1
        fine = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=True)
    else:
        fine = F.interpolate(flat, scale_factor=factor, mode="bicubic", align_corners=False)
    crop = pad * factor
    fine = fine[..., crop:crop + n * factor, crop:crop + n * factor]
    return fine.reshape(*lead, n * factor, n * factor)


def rmse(a: Tensor, b: Tensor) -> float:
    return float((a - b).square().mean().sqrt())


def load_run(run: Path, device: torch.device) -> tuple[Config, MarkovScore]:
    """The config and trained score network of a kolmogorov run directory."""
    config_path, state_path = run / CONFIG_FILE, run / STATE_FILE
    if not config_path.is_file():
        raise BadInputError(config_path, "not found: RUN must be a kolmogorov run directory")
    if (run / RUN_FILE).is_file() and (trainer := read_info(run).get("trainer")) != "kolmogorov":
        raise BadInputError(run, f"is a {trainer} run; assimilate needs a kolmogorov run")
    config = load_file(Config, config_path)
    if not state_path.is_file():
        raise BadInputError(state_path, "not found: the run has not finished training (no state.pth yet)")
    state = load_torch_file(state_path, "the score network's state dict")
    score = make_score(to_dict(config))
    try:
        load_model_state(score, state)
    except ValueError as exc:
        raise BadInputError(state_path, f"does not load into the network of config.json ({exc})") from None
    return config, score.to(device).eval()


def posterior_samples(score: MarkovScore, y: Tensor, observe: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                      cfg: AssimilateConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Tensor:
    """`cfg.samples` draws of p(x | y) over trajectories of `shape` (L, 2, N, N)."""
    prior = VPSDE(score, shape)
    posterior = GaussianPosterior(prior, y.to(device), observe, std=cfg.noise, gamma=cfg.gamma)
    sampler = VPSDE(posterior, shape)
    return sampler.sample(cfg.samples, steps=cfg.steps, corrections=cfg.corrections, tau=cfg.tau,
                          device=device, progress=progress).cpu()


def check_fits(cfg: AssimilateConfig, test: Tensor, window: int, path: Path) -> None:
    """The flags that depend on the test set and the run: grid size, trajectory count, length."""
    n, t, _, size, _ = test.shape
    if size % cfg.factor:
        raise BadInputError(None, f"--factor: {cfg.factor} does not divide the grid size {size}")
    if cfg.trajectory + cfg.trajectories > n:
        raise BadInputError(path, f"has {n} test trajectories: --trajectory {cfg.trajectory} "
                                  f"--trajectories {cfg.trajectories} asks past the end")
    if cfg.length < window or cfg.start + cfg.length > t:
        raise BadInputError(path, f"has {t} states per trajectory: need --window {window} <= --length and "
                                  f"--start + --length <= {t}")


def run_assimilation(run: Path, cfg: AssimilateConfig) -> int:
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    config, score = load_run(run, device)
    data = Path(cfg.data or config.data)
    test = load_split(data / "test.h5")
    check_fits(cfg, test, config.window, data / "test.h5")
    check_grid(data / "test.h5", test.shape[-1], config)
    observe = Observation(cfg.obs, cfg.factor, cfg.every)
    out = cfg.out or run / "assimilation" / f"{cfg.obs}_x{cfg.factor}_t{cfg.trajectory}"
    check_output(out, OUTPUT_FILES, "--out")
    torch.manual_seed(cfg.seed)

    size = test.shape[-1]
    shape = (cfg.length, 2, size, size)
    rows, results = [], []
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", "y", "samples", "mean", "baseline")}
    for index in range(cfg.trajectory, cfg.trajectory + cfg.trajectories):
        truth = test[index, cfg.start:cfg.start + cfg.length]
        y = observe(truth)
        y = y + cfg.noise * torch.randn_like(y)
        started = time.perf_counter()
        samples = posterior_samples(score, y, observe, shape, cfg, device)
        seconds = time.perf_counter() - started
        mean = samples.mean(dim=0)
        baseline = observe.interpolate(y, cfg.length, size)
        result = {
            "trajectory": index,
            "rmse_posterior_mean": rmse(mean, truth),
            "rmse_posterior_samples": float(np.mean([rmse(s, truth) for s in samples])),
            "rmse_baseline": rmse(baseline, truth),
            "rms_truth": float(truth.square().mean().sqrt()),
            "rmse_observation_fit": rmse(observe(mean), y),
            "seconds": round(seconds, 2),
        }
        result["ratio_to_baseline"] = result["rmse_posterior_mean"] / result["rmse_baseline"]
        results.append(result)
        print(f"trajectory {index}: posterior-mean RMSE {result['rmse_posterior_mean']:.4f}, "
              f"interpolation RMSE {result['rmse_baseline']:.4f} (ratio {result['ratio_to_baseline']:.3f}), "
              f"{seconds:.0f} s", flush=True)
        for key, value in (("truth", truth), ("y", y), ("samples", samples), ("mean", mean), ("baseline", baseline)):
            arrays[key].append(value.numpy())
        if not rows:
            rows = figure_rows(truth, baseline, samples, mean, baseline)  # the observation, shown interpolated

    summary = {key: float(np.mean([r[key] for r in results]))
               for key in ("rmse_posterior_mean", "rmse_posterior_samples", "rmse_baseline", "rms_truth")}
    summary["ratio_to_baseline"] = summary["rmse_posterior_mean"] / summary["rmse_baseline"]
    report = {
        "run": str(run), **to_dict(cfg), "data": str(data), "out": str(out),
        "baseline": "periodic bicubic interpolation in space" + (", linear in time" if cfg.obs == "sparse" else ""),
        "error": "RMSE over every state, velocity component and grid point",
        "mean": summary, "trajectories": results,
    }
    picture = grid([r[1] for r in rows], labels=[r[0] for r in rows])
    make_dir(out)
    write_png(out / "vorticity.png", picture)
    write_posterior(out / "posterior.h5", {k: np.stack(v) for k, v in arrays.items()})
    write_json(out / "figures.json", report)
    print(f"assimilation ({cfg.obs}): posterior-mean RMSE {summary['rmse_posterior_mean']:.4f} vs interpolation "
          f"{summary['rmse_baseline']:.4f} (ratio {summary['ratio_to_baseline']:.3f}) over {len(results)} "
          f"trajector{'y' if len(results) == 1 else 'ies'}; figures in {out}")
    return 0


def figure_rows(truth: Tensor, observed: Tensor, samples: Tensor, mean: Tensor, baseline: Tensor,
                columns: int = 8) -> list[tuple[str, np.ndarray]]:
    """(label, vorticity (columns, N, N)) rows, at up to `columns` evenly spaced states."""
    pick = torch.linspace(0, len(truth) - 1, min(columns, len(truth))).round().long()
    rows = [("truth", truth), ("observed", observed)]
    rows += [(f"sample {i + 1}", s) for i, s in enumerate(samples[:3])]
    rows += [("mean", mean), ("baseline", baseline)]
    return [(label, vorticity(x[pick]).numpy()) for label, x in rows]


def write_posterior(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import h5py

    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value.astype(np.float32))
    tmp.replace(path)
