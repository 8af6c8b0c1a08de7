"""`runforge train kolmogorov`: the run files of docs/kolmogorov.md, the score network, the VPSDE loss, resume."""

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from runforge.cli import main
from runforge.config import to_dict
from runforge.trainers.kolmogorov.config import PRESETS, Config
from runforge.trainers.kolmogorov.data import load_split, random_windows
from runforge.trainers.kolmogorov.score import VPSDE, MarkovScore, make_score

torch.set_num_threads(1)

SEED_CONFIG = {
    "window": 5, "embedding": 64, "hidden_channels": [96, 192, 384], "hidden_blocks": [3, 3, 3],
    "kernel_size": 3, "activation": "SiLU", "epochs": 4096, "batch_size": 32, "optimizer": "AdamW",
    "learning_rate": 0.0002, "weight_decay": 0.001, "scheduler": "linear",
}
RUN_DIR = re.compile(r"^[a-z]+-[a-z]+-\d+_[a-z0-9]{8}$")


@pytest.fixture(scope="module")
def tiny_run(kolmogorov_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    code = main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--root", str(root),
                 "--window", "3", "--progress", "lines"])
    assert code == 0
    (run,) = list(root.iterdir())
    return run


def test_missing_dataset_is_one_error_line_before_any_run_dir(tmp_path, capsys):
    code = main(["train", "kolmogorov", "--data", str(tmp_path / "nowhere"), "--root", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("runforge: error: ") and "nowhere/train.h5" in err[0] and "runforge data kolmogorov" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dataset_shorter_than_the_window_is_refused(kolmogorov_data, tmp_path, capsys):
    assert main(["train", "kolmogorov", "--preset", "tiny", "--data", str(kolmogorov_data), "--window", "9",
                 "--root", str(tmp_path / "runs")]) == 2
    assert "train.h5: trajectories of 8 states are shorter than --window 9" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_config_json_at_start_holds_the_seed_config_first(kolmogorov_data, tmp_path):
    # the default, full-size network: stop the process as soon as config.json is written
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "runforge", "train", "kolmogorov", "--data", str(kolmogorov_data),
                             "--root", str(root), "--progress", "lines"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(root.glob("*/config.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        (path,) = list(root.glob("*/config.json"))
    finally:
        proc.kill()
        proc.wait()
    assert RUN_DIR.match(path.parent.name)
    config = json.loads(path.read_text())
    assert list(config)[:12] == list(SEED_CONFIG)
    assert dict(list(config.items())[:12]) == SEED_CONFIG


def test_tiny_run_writes_config_state_metrics_samples_checkpoints_and_snapshots(tiny_run):
    assert RUN_DIR.match(tiny_run.name)
    config = json.loads((tiny_run / "config.json").read_text())
    assert config == to_dict(PRESETS["tiny"]) | {"data": config["data"], "window": 3}
    lines = [json.loads(line) for line in (tiny_run / "train.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all({"loss_train", "lr"} <= set(line) for line in lines)
    assert [line["step"] for line in lines if "loss_valid" in line] == [2, 4]  # valid_every 2
    assert lines[0]["lr"] == pytest.approx(1e-3) and lines[1]["lr"] == pytest.approx(1e-3 * 3 / 4)  # linear
    assert sorted(p.name for p in (tiny_run / "samples").iterdir()) == ["step_0004_samples.png"]
    assert sorted(p.name for p in (tiny_run / "stats").iterdir()) == ["stats_2.json", "stats_4.json"]
    assert json.loads((tiny_run / "stats" / "stats_4.json").read_text())["loss_valid"] == lines[3]["loss_valid"]
    assert sorted(p.name for p in (tiny_run / "ckpts").glob("*.pt")) == ["ckpt_2_rank0.pt", "ckpt_4_rank0.pt"]
    assert json.loads((tiny_run / "run.json").read_text())["status"] == "finished"


def test_state_pth_loads_into_a_model_rebuilt_from_config_json(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    state = torch.load(tiny_run / "state.pth", weights_only=True)
    score = make_score(config)
    score.load_state_dict(state)  # strict: every key and shape matches
    ckpt = torch.load(tiny_run / "ckpts" / "ckpt_4_rank0.pt", weights_only=False)
    assert all(torch.equal(state[k], ckpt["score"][k]) for k in state)
    fresh = make_score(config).state_dict()
    assert any(not torch.equal(state[k], fresh[k]) for k in state if state[k].is_floating_point())


def test_resume_from_a_checkpoint_reaches_the_same_final_state(tiny_run, capsys):
    final = torch.load(tiny_run / "state.pth", weights_only=True)
    lines_before = (tiny_run / "train.jsonl").read_text().splitlines()
    (tiny_run / "state.pth").unlink()
    code = main(["train", "kolmogorov", "--resume", str(tiny_run / "ckpts" / "ckpt_2_rank0.pt"), "--progress", "lines"])
    assert code == 0
    resumed = torch.load(tiny_run / "state.pth", weights_only=True)
    for key in final:
        assert torch.allclose(final[key], resumed[key], atol=1e-6), key
    lines_after = (tiny_run / "train.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines_after] == [1, 2, 3, 4]
    for a, b in zip(lines_before, lines_after):
        assert json.loads(a)["loss_train"] == pytest.approx(json.loads(b)["loss_train"], rel=1e-5)


def test_a_validate_command_while_paused_validates_at_the_held_epoch(kolmogorov_data, tmp_path):
    from dataclasses import replace

    from runforge import Run
    from runforge.run import send_command
    from runforge.trainers.kolmogorov.config import run_options
    from runforge.trainers.kolmogorov.train import train

    cfg = replace(PRESETS["tiny"], data=kolmogorov_data, window=3, epochs=2, valid_every=100, ckpt_every=100)

    class PauseAndValidateAtEpoch1(Run):
        def poll(self, step=None, **kwargs):
            if step == 1:
                send_command(self.dir, "pause")
                send_command(self.dir, "validate")
                self._controller._next_control_check = 0.0
                validate = kwargs["on_validate"]  # the loop's own validation, which poll calls while held

                def validate_then_resume():
                    validate()
                    send_command(self.dir, "resume")

                kwargs["on_validate"] = validate_then_resume
            return super().poll(step, **kwargs)

    with PauseAndValidateAtEpoch1(trainer="kolmogorov", config=to_dict(cfg), out=tmp_path / "run", progress=False,
                                  handle_signals=False, tensorboard=False, **run_options(cfg)) as run:
        train(cfg, run)
    stats = {p.name: json.loads(p.read_text()) for p in (tmp_path / "run" / "stats").iterdir()}
    assert sorted(stats) == ["stats_1.json", "stats_2.json"]
    assert stats["stats_1.json"]["training_paused"] is True and stats["stats_2.json"]["training_paused"] is False
    lines = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss_valid" in line] == [1, 2]  # the held epoch's line has it
    assert lines[0]["loss_valid"] == stats["stats_1.json"]["loss_valid"]


def test_score_loss_decreases_on_a_tiny_set_and_every_parameter_gets_a_gradient(kolmogorov_data):
    torch.manual_seed(0)
    x = random_windows(load_split(kolmogorov_data / "train.h5"), 3, torch.Generator().manual_seed(0))
    config = to_dict(Config(window=3, embedding=16, hidden_channels=[8, 16], hidden_blocks=[1, 1]))
    score = make_score(config)
    sde = VPSDE(score.kernel, x.shape[1:])

    def fixed_loss():
        with torch.random.fork_rng():
            torch.manual_seed(1)
            return sum(sde.loss(x).item() for _ in range(8)) / 8

    before = fixed_loss()
    optimizer = torch.optim.AdamW(score.parameters(), lr=3e-3)
    for step in range(40):
        loss = sde.loss(x)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            missing = [n for n, p in score.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missing
        optimizer.step()
    after = fixed_loss()
    assert after < 0.8 * before


def test_markov_score_takes_edge_states_from_edge_windows_and_centres_from_every_window():
    torch.manual_seed(0)
    config = to_dict(Config(window=5, embedding=8, hidden_channels=[4], hidden_blocks=[1]))
    score = make_score(config)
    assert isinstance(score, MarkovScore) and score.order == 2
    x = torch.randn(2, 9, 2, 8, 8)
    t = torch.tensor(0.3)
    eps = score(x, t)
    assert eps.shape == x.shape
    window_eps = [score.kernel(x[:, j:j + 5].flatten(1, 2), t).unflatten(1, (5, 2)) for j in range(5)]
    assert torch.allclose(eps[:, :2], window_eps[0][:, :2], atol=1e-6)
    for j in range(5):
        assert torch.allclose(eps[:, j + 2], window_eps[j][:, 2], atol=1e-6)
    assert torch.allclose(eps[:, 7:], window_eps[4][:, 3:], atol=1e-6)


def test_vpsde_cosine_schedule_and_sampling_a_known_gaussian():
    sde = VPSDE(lambda x, t: x, (1,))
    t = torch.linspace(0, 1, 11)
    assert sde.mu(t)[0] == 1 and sde.mu(t)[-1].item() == pytest.approx(1e-3, rel=1e-4)
    assert torch.all(sde.mu(t)[1:] < sde.mu(t)[:-1])
    assert torch.allclose(sde.mu(t) ** 2 + sde.sigma(t) ** 2, torch.full_like(t, 1 + 1e-6))
    # exact ε of N(m, s² I) in 256 dimensions (the Langevin step is scaled per sample, as SDA's):
    # the sampler must recover mean and spread (small Langevin steps barely widen it)
    m, s = 0.7, 0.4
    exact = VPSDE(lambda x, t: sde.sigma(t) * (x - sde.mu(t) * m) / (sde.mu(t) ** 2 * s**2 + sde.sigma(t) ** 2), (256,))
    torch.manual_seed(0)
    for corrections in (0, 1):
        samples = exact.sample(64, steps=128, corrections=corrections, tau=0.1)
        assert samples.mean().item() == pytest.approx(m, abs=0.02)
        assert samples.std().item() == pytest.approx(s, abs=0.02)


def test_config_rejects_an_even_window_and_mismatched_levels(capsys):
    assert main(["train", "kolmogorov", "--window", "4"]) == 2
    assert "--window" in capsys.readouterr().err
    assert main(["train", "kolmogorov", "--hidden_channels", "8,16", "--hidden_blocks", "1"]) == 2
    assert "--hidden_blocks" in capsys.readouterr().err
