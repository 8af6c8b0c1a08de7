"""The tiny Kolmogorov dataset the trainer tests share: 10 trajectories of 8 states at 16²."""

import pytest
import torch

from runforge.trainers.kolmogorov.config import data_preset
from runforge.trainers.kolmogorov.data import generate

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("kdata")
    cfg = data_preset("tiny")
    cfg.trajectories, cfg.length = 10, 8
    generate(cfg, out, log=lambda _: None)
    return out
