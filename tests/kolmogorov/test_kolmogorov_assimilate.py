"""`runforge assimilate RUN --obs coarse|sparse`: outputs, the baseline, and the posterior score."""

import json

import h5py
import pytest
import torch
from PIL import Image

from runforge.cli import main
from runforge.trainers.kolmogorov.assimilate import Observation, periodic_upsample
from runforge.trainers.kolmogorov.score import VPSDE, GaussianPosterior

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(kolmogorov_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--root", str(root),
                 "--epochs", "1", "--window", "3", "--progress", "lines"]) == 0
    (run,) = list(root.iterdir())
    return run


@pytest.mark.parametrize("obs, extra, y_shape", [
    ("coarse", [], (1, 6, 2, 8, 8)),
    ("sparse", ["--every", "2"], (1, 3, 2, 4, 4)),
])
def test_assimilate_writes_figures_json_vorticity_png_and_posterior_arrays(trained, tmp_path, capsys, obs, extra, y_shape):
    out = tmp_path / obs
    code = main(["assimilate", str(trained), "--obs", obs, "--factor", "2" if obs == "coarse" else "4",
                 "--length", "6", "--samples", "2", "--steps", "3", "--out", str(out), *extra])
    assert code == 0
    printed = capsys.readouterr().out
    assert "posterior-mean RMSE" in printed and "interpolation" in printed
    assert sorted(p.name for p in out.iterdir()) == ["figures.json", "posterior.h5", "vorticity.png"]
    report = json.loads((out / "figures.json").read_text())
    assert report["obs"] == obs and len(report["trajectories"]) == 1
    mean = report["mean"]
    assert mean["ratio_to_baseline"] == pytest.approx(mean["rmse_posterior_mean"] / mean["rmse_baseline"])
    with h5py.File(out / "posterior.h5", "r") as h5:
        assert h5["truth"].shape == (1, 6, 2, 16, 16)
        assert h5["samples"].shape == (1, 2, 6, 2, 16, 16)
        assert h5["mean"].shape == (1, 6, 2, 16, 16) and h5["baseline"].shape == (1, 6, 2, 16, 16)
        assert h5["y"].shape == y_shape
    # rows: truth, observed, 2 samples, mean, baseline; 6 states each (zoom 2, pad 2)
    with Image.open(out / "vorticity.png") as picture:
        assert picture.size == (70 + 6 * (32 + 2), 2 + 6 * (32 + 2))


def test_bad_run_directories_get_one_line_errors(trained, tmp_path, capsys):
    assert main(["assimilate", str(tmp_path), "--obs", "coarse"]) == 2
    assert "config.json" in capsys.readouterr().err
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((trained / "config.json").read_text())
    assert main(["assimilate", str(half), "--obs", "coarse"]) == 2
    assert "state.pth" in capsys.readouterr().err
    assert main(["assimilate", str(trained), "--obs", "coarse", "--factor", "3"]) == 2
    assert "--factor" in capsys.readouterr().err
    assert main(["assimilate", str(trained), "--obs", "coarse", "--trajectory", "5"]) == 2
    assert "test.h5: has 1 test trajectories: --trajectory 5" in capsys.readouterr().err
    assert main(["assimilate", str(trained), "--obs", "coarse", "--length", "9"]) == 2
    assert "test.h5: has 8 states per trajectory" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    ([], "missing required option(s): --obs"),
    (["--obs", "dense"], "--obs"),
    (["--obs", "coarse", "--samples", "0"], "--samples: must be >= 1"),
    (["--obs", "coarse", "--noise", "0"], "--noise: must be > 0"),
])
def test_bad_flags_get_one_line_errors_before_anything_is_read(flags, message, tmp_path, capsys):
    assert main(["assimilate", str(tmp_path / "no-run"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not any(tmp_path.iterdir())


def test_interpolation_baseline_is_exact_where_it_must_be():
    x = torch.linspace(0, 2 * torch.pi, 33)[:-1]
    smooth = torch.sin(x)[:, None] + torch.cos(2 * x)[None, :]  # low wavenumbers on a 32² grid
    coarse = Observation("coarse", 4, 1)
    up = periodic_upsample(coarse(smooth), 4, align_corners=False)
    assert up.shape == (32, 32)
    assert (up - smooth).abs().max() < 0.1 * smooth.abs().max()  # block means smear a little
    sparse = Observation("sparse", 4, 2)
    traj = torch.randn(5, 2, 32, 32)
    y = sparse(traj)
    assert y.shape == (3, 2, 8, 8)
    filled = sparse.interpolate(y, 5, 32)
    assert filled.shape == (5, 2, 32, 32)
    assert torch.allclose(filled[::2, :, ::4, ::4], y, atol=1e-5)  # observed points and states are kept
    assert torch.allclose(filled[1], (filled[0] + filled[2]) / 2, atol=1e-5)  # linear in time


def test_gaussian_posterior_score_recovers_the_analytic_posterior_mean():
    # prior N(0, I) in 256 dimensions, exact ε; observe the first half with noise 0.1
    prior = VPSDE(lambda x, t: prior.sigma(t) * x / (prior.mu(t) ** 2 + prior.sigma(t) ** 2), (256,))
    torch.manual_seed(0)
    truth = torch.randn(256)
    observe = lambda x: x[..., :128]  # noqa: E731
    y = observe(truth) + 0.1 * torch.randn(128)
    posterior = VPSDE(GaussianPosterior(prior, y, observe, std=0.1), (256,))
    samples = posterior.sample(32, steps=128, corrections=1, tau=0.1)
    mean = samples.mean(dim=0)
    assert (mean[:128] - y / 1.01).abs().mean() < 0.05
    assert mean[128:].abs().mean() < 0.25  # unobserved half: prior mean 0, 32 samples of unit spread
    assert samples[:, 128:].std().item() == pytest.approx(1.0, abs=0.1)
