"""RunforgeLogger and RunforgeControl with the real Lightning Trainer: a 5-parameter model on the CPU."""

import csv as csv_module
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from runforge.integrations.lightning import RunforgeControl, RunforgeLogger  # noqa: E402
from runforge.run import read_metrics  # noqa: E402
from runforge.run.control import send, taken_step  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Lightning's advice about dataloader workers and tiny logging intervals, and a deprecation inside
# Lightning itself: the suite turns warnings into errors, and none of these is about runforge.
pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*litlogger.*|.*litmodels.*"),
]


class Tiny(pl.LightningModule):
    def __init__(self, lr=0.05, schedule=None, fail_at=None):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)
        self.validated_at = []

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.global_step == self.hparams.fail_at:
            raise RuntimeError("boom")
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.trainer.global_step)
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loaders(n=48):
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator))
    return torch.utils.data.DataLoader(data, batch_size=4), torch.utils.data.DataLoader(data, batch_size=4)


class At(Callback):
    """Runs `action(trainer)` after training batch `step`; placed before RunforgeControl, so the
    command it sends is there when RunforgeControl polls the same batch."""

    def __init__(self, step, action):
        self.step, self.action, self.result = step, action, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.result = self.action(trainer)


def send_now(command):
    def action(trainer):
        path = send(trainer.logger.log_dir, command)
        time.sleep(0.12)  # past the run layer's 0.1 s between looks at control/
        return path
    return action


def fit(callbacks=(), loggers=None, max_steps=8, model=None, **trainer_args):
    logger = RunforgeLogger(root="runs")
    trainer = pl.Trainer(max_steps=max_steps, logger=[logger, *(loggers or [])],
                         callbacks=[*callbacks, RunforgeControl()], accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, limit_val_batches=2,
                         num_sanity_val_steps=0, **trainer_args)
    model = model or Tiny()
    train, val = loaders()
    trainer.fit(model, train, val)
    return trainer, logger, model, Path(logger.log_dir)


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_a_fit_writes_a_complete_run_and_checkpoints_stay_where_lightning_puts_them(tmp_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checkpoint = ModelCheckpoint()
    csv = CSVLogger(tmp_dir / "csv", name="", version="")

    def image(trainer):
        trainer.logger.experiment.add_image("samples/first", torch.rand(3, 8, 8), trainer.global_step)

    model = Tiny(schedule=Namespace(kind="cosine", warmup={"steps": 2}))
    trainer, logger, model, run_dir = fit([checkpoint, At(2, image)], loggers=[csv], model=model, max_steps=6)

    assert run_dir.parent == tmp_dir / "runs" and len(list((tmp_dir / "runs").iterdir())) == 1
    info = read_json(run_dir / "run.json")
    assert info["status"] == "finished" and info["trainer"] == "lightning"
    assert read_json(run_dir / "status.json")["step_max"] == 6
    assert read_json(run_dir / "config.json") == {
        "lr": 0.05, "schedule": {"kind": "cosine", "warmup": {"steps": 2}}, "fail_at": None}

    ours = [(line["step"], line["loss"]) for line in read_metrics(run_dir) if "loss" in line]
    with open(tmp_dir / "csv" / "metrics.csv", newline="") as rows:
        lightning = [(int(row["step"]), float(row["loss"])) for row in csv_module.DictReader(rows) if row["loss"]]
    assert [step for step, _ in ours] == [step for step, _ in lightning] == list(range(6))
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in lightning])

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = events.Scalars("loss")
    assert [e.step for e in scalars] == list(range(6))
    assert [e.value for e in scalars] == pytest.approx([loss for _, loss in ours])
    assert [e.step for e in events.Images("samples_first")] == [2]
    assert (run_dir / "images" / "step_0002_samples_first.png").is_file()

    saved = Path(checkpoint.best_model_path)
    assert saved.parent == run_dir / "checkpoints" and saved.is_file()
    assert f"checkpoint saved: checkpoints/{saved.name} (ModelCheckpoint)" in (run_dir / "events.log").read_text()
    assert torch.load(saved, weights_only=False)["global_step"] == 6


def test_validate_runs_the_validation_loop_at_the_batch_that_takes_it(tmp_dir):
    sender = At(3, send_now("validate"))
    trainer, logger, model, run_dir = fit([sender], max_steps=6, val_check_interval=100, check_val_every_n_epoch=None)

    assert taken_step(sender.result) == 3
    assert model.validated_at == [3, 3]  # both validation batches, once, right after batch 3
    validation = [line for line in read_metrics(run_dir) if "val_loss" in line]
    assert [line["step"] for line in validation] == [2]  # Lightning logs it at the batches done before this one


def test_stop_ends_the_fit_early_with_a_checkpoint_and_an_interrupted_run(tmp_dir):
    sender = At(4, send_now("stop"))
    trainer, logger, model, run_dir = fit([sender], max_steps=40)

    assert trainer.global_step == 4 and taken_step(sender.result) == 4
    saved = run_dir / "checkpoints" / "epoch=0-step=4-stop.ckpt"
    state = torch.load(saved, weights_only=False)
    assert state["global_step"] == 4 and "state_dict" in state
    assert read_json(run_dir / "run.json")["status"] == "interrupted"
    assert "checkpoint saved: checkpoints/epoch=0-step=4-stop.ckpt (stop command)" in (run_dir / "events.log").read_text()
    assert max(line["step"] for line in read_metrics(run_dir)) == 3


def test_save_writes_a_checkpoint_and_training_goes_on(tmp_dir):
    sender = At(2, send_now("save"))
    trainer, logger, model, run_dir = fit([sender], max_steps=5)

    assert trainer.global_step == 5
    assert torch.load(run_dir / "checkpoints" / "epoch=0-step=2-save.ckpt", weights_only=False)["global_step"] == 2
    assert read_json(run_dir / "run.json")["status"] == "finished"


def test_pause_holds_the_loop_between_batches_and_validates_while_paused(tmp_dir):
    starts = {}

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            starts[trainer.global_step] = time.monotonic()

    def pause_then_validate_then_resume(trainer):
        run_dir = trainer.logger.log_dir

        def later():
            time.sleep(0.4)
            send(run_dir, "validate")
            time.sleep(0.3)
            send(run_dir, "resume")

        send(run_dir, "pause")
        time.sleep(0.12)
        threading.Thread(target=later, daemon=True).start()

    trainer, logger, model, run_dir = fit([Clock(), At(2, pause_then_validate_then_resume)], max_steps=4,
                                          val_check_interval=100, check_val_every_n_epoch=None)

    # global_step 2 is reached at the end of the second batch: the pause falls before the third starts
    assert starts[1] - starts[0] < 0.5 and starts[2] - starts[1] >= 0.6
    assert model.validated_at[:2] == [2, 2]
    log = (run_dir / "events.log").read_text()
    assert "training paused" in log and "training resumed" in log


def test_a_failing_fit_marks_the_run_failed(tmp_dir):
    with pytest.raises(RuntimeError, match="boom"):
        fit(model=Tiny(fail_at=3))
    (run_dir,) = (tmp_dir / "runs").iterdir()
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "RuntimeError: boom" in info["error"]
    assert [line["step"] for line in read_metrics(run_dir)] == [0, 1, 2]


def test_log_hyperparams_takes_namespaces_and_attribute_dicts_and_merges(tmp_dir):
    from lightning.fabric.utilities.data import AttributeDict

    logger = RunforgeLogger(out="runs/h", config={"seed": 1})
    logger.log_hyperparams(Namespace(model=Namespace(width=8, act=torch.nn.ReLU), lr=torch.tensor(0.5)))
    logger.log_hyperparams(AttributeDict(data={"path": Path("d/x"), "sizes": (1, 2)}))
    logger.log_metrics({"a": torch.tensor(2.0), "time": 3.0}, step=7)
    logger.finalize("success")
    assert read_json("runs/h/config.json") == {
        "seed": 1, "model": {"width": 8, "act": "ReLU"}, "lr": 0.5, "data": {"path": "d/x", "sizes": [1, 2]}}
    assert [{k: v for k, v in line.items() if k != "time"} for line in read_metrics("runs/h")] == [
        {"step": 7, "a": 2.0, "time_": 3.0}]
    assert read_json("runs/h/run.json")["status"] == "finished"


def test_resume_is_refused_rather_than_cutting_the_log(tmp_dir):
    with pytest.raises(ValueError, match="new run"):
        RunforgeLogger(out="runs/x", resume=True)


def test_ddp_on_two_processes_writes_one_run(tmp_dir):
    script = tmp_dir / "ddp_fit.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import torch
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import Callback
        from runforge.integrations.lightning import RunforgeControl, RunforgeLogger
        from runforge.run.control import send

        class Tiny(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)
            def training_step(self, batch, batch_idx):
                loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
                self.log("loss", loss, sync_dist=True)
                return loss
            def validation_step(self, batch, batch_idx):
                with open(f"rank{self.global_rank}.txt", "a") as out:  # one file per rank: no interleaving
                    out.write(f"validated {self.global_step}\\n")
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05)

        class Send(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_rank == 0 and trainer.global_step in (2, 4):
                    send(trainer.logger.log_dir, "validate" if trainer.global_step == 2 else "stop")
                    time.sleep(0.12)

        if __name__ == "__main__":
            g = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g))
            logger = RunforgeLogger(root="runs")
            trainer = pl.Trainer(max_steps=12, logger=logger, callbacks=[Send(), RunforgeControl()], accelerator="cpu",
                                 devices=2, strategy="ddp", enable_progress_bar=False, enable_model_summary=False,
                                 log_every_n_steps=1, limit_val_batches=1, num_sanity_val_steps=0,
                                 val_check_interval=100, check_val_every_n_epoch=None)
            trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4),
                        torch.utils.data.DataLoader(data, batch_size=4))
            with open(f"rank{trainer.global_rank}.txt", "a") as out:
                out.write(f"dir {logger.log_dir} step {trainer.global_step}\\n")
    """))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_dir, capture_output=True, text=True,
                            timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = [p for p in (tmp_dir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and list(tmp_dir.glob("runs/*/train.jsonl")) == [runs[0] / "train.jsonl"]
    (run_dir,) = runs
    for rank in (0, 1):
        # every rank knows the one directory, validated when rank 0 took `validate` and stopped with it
        assert (tmp_dir / f"rank{rank}.txt").read_text().splitlines() == [
            "validated 2", "validated 4", f"dir {run_dir} step 4"]
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted" and info["world_size"] == 2
    assert [line["step"] for line in read_metrics(run_dir)] == [0, 1, 2, 3]
    # Lightning's default ModelCheckpoint writes beside the stop checkpoint, in the same folder
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch=0-step=4-stop.ckpt",
                                                                          "epoch=0-step=4.ckpt"]


def test_import_runforge_imports_neither_torch_nor_lightning():
    code = "import sys, runforge, runforge.integrations; print([m for m in ('torch', 'lightning') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"
