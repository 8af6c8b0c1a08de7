"""RunforgeCallback with the real transformers Trainer: a tiny GPT-2 built from its config, on the CPU."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Nothing here may reach the network: the model is built from a config, the data is random tokens.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainerControl,  # noqa: E402
                          TrainerState, TrainingArguments)

from runforge.integrations.huggingface import POLL_INTERVAL_S, RunforgeCallback, _flag_sharer, split_logs  # noqa: E402
from runforge.run import list_snapshots, read_metrics  # noqa: E402
from runforge.run.control import send, taken_step  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, 8), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                      bos_token_id=0, eos_token_id=0))


def make_trainer(tmp, callbacks, eval_dataset=True, **overrides):
    options = dict(output_dir=str(tmp / "out"), max_steps=6, per_device_train_batch_size=4,
                   per_device_eval_batch_size=8, logging_steps=2, save_strategy="no", eval_strategy="no",
                   report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=0)
    options.update(overrides)
    return Trainer(model=tiny_model(), args=TrainingArguments(**options), train_dataset=Tokens(64, 1),
                   eval_dataset=Tokens(8, 2) if eval_dataset else None, callbacks=callbacks)


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def events(run_dir):
    return (run_dir / "events.log").read_text(encoding="utf-8")


class Sender(TrainerCallback):
    """Sends runforge commands from inside training, as `runforge ctl` would, at chosen steps."""

    def __init__(self, runforge, commands):
        self.runforge = runforge
        self.commands = commands  # {step: command}
        self.sent = {}
        self.step_times = {}
        self.evaluated_at = []
        self.saved_at = []

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times[state.global_step] = time.monotonic()
        command = self.commands.get(state.global_step)
        if command:
            time.sleep(POLL_INTERVAL_S + 0.05)  # past the callback's poll throttle: the next poll reads it
            self.sent[command] = send(self.runforge.run.dir, command)

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluated_at.append(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self.saved_at.append(state.global_step)


def test_run_directory_is_complete(tmp_dir):
    callback = RunforgeCallback(config={"note": "tiny"})
    trainer = make_trainer(tmp_dir, [callback], eval_strategy="steps", eval_steps=3)
    trainer.train()
    run_dir = callback.run_dir
    assert callback.run is None and run_dir.parent == tmp_dir / "runs"

    info = read_json(run_dir / "run.json")
    assert info["status"] == "finished" and info["trainer"] == "huggingface"
    assert info["step"] == 6 and info["step_max"] == 6 and info["finished_at"]

    config = read_json(run_dir / "config.json")
    assert config["training_args"]["logging_steps"] == 2 and config["training_args"]["max_steps"] == 6
    assert config["training_args"]["output_dir"] == str(tmp_dir / "out")
    assert config["model"]["class"] == "GPT2LMHeadModel" and config["model"]["config"]["n_layer"] == 2
    assert config["note"] == "tiny"

    lines = read_metrics(run_dir)
    losses = {line["step"]: line["loss"] for line in lines if "loss" in line}
    assert sorted(losses) == [2, 4, 6] and all(isinstance(v, float) for v in losses.values())
    assert all("learning_rate" in line and "epoch" in line for line in lines if "loss" in line)
    val = {line["step"]: line["val"] for line in lines if "val" in line}
    assert sorted(val) == [3, 6] and "loss" in val[3] and "runtime" in val[3]
    summary = [line for line in lines if "train" in line]
    assert len(summary) == 1 and "loss" in summary[0]["train"] and "runtime" in summary[0]["train"]
    assert not any(key.startswith(("eval_", "train_")) for line in lines for key in line)

    snapshots = list_snapshots(run_dir)
    steps = sorted(read_json(path)["step_current"] for path in (run_dir / "stats").glob("stats_*.json"))
    assert steps == [3, 6] and len(snapshots) == 2
    snapshot = read_json(run_dir / "stats" / "stats_3.json")
    assert isinstance(snapshot["eval_loss"], float) and snapshot["step_max"] == 6
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    status = read_json(run_dir / "status.json")
    assert status["status"] == "finished" and status["validation_running"] is False


def test_validate_command_makes_the_trainer_evaluate_at_that_step(tmp_dir):
    callback = RunforgeCallback()
    sender = Sender(callback, {3: "validate"})
    # evaluation is configured but not due before the end (the Trainer evaluates at its last step): only
    # the command can cause the one at step 3
    trainer = make_trainer(tmp_dir, [sender, callback], eval_strategy="steps", eval_steps=1000)
    trainer.train()
    run_dir = callback.run_dir
    assert sender.evaluated_at == [3, 6]
    assert taken_step(sender.sent["validate"]) == 3
    assert [line["step"] for line in read_metrics(run_dir) if "val" in line] == [3, 6]
    assert (run_dir / "stats" / "stats_3.json").exists()
    assert read_json(run_dir / "run.json")["status"] == "finished"


def test_validate_without_an_evaluation_setup_is_ignored_not_fatal(tmp_dir):
    callback = RunforgeCallback()
    sender = Sender(callback, {2: "validate"})
    trainer = make_trainer(tmp_dir, [sender, callback], eval_dataset=False)
    trainer.train()
    assert sender.evaluated_at == [] and trainer.state.global_step == 6
    assert "validate ignored" in events(callback.run_dir)
    assert read_json(callback.run_dir / "run.json")["status"] == "finished"


def test_stop_command_ends_training_early_with_a_checkpoint(tmp_dir):
    callback = RunforgeCallback()
    sender = Sender(callback, {3: "stop"})
    trainer = make_trainer(tmp_dir, [sender, callback], max_steps=50)
    trainer.train()
    run_dir = callback.run_dir
    assert trainer.state.global_step == 3 and sender.saved_at == [3]
    checkpoint = tmp_dir / "out" / "checkpoint-3"
    assert (checkpoint / "trainer_state.json").exists() and (checkpoint / "model.safetensors").exists()
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted" and info["step"] == 3
    assert f"checkpoint saved: {checkpoint}" in events(run_dir)
    assert 3 in [line["step"] for line in read_metrics(run_dir) if "loss" in line]  # the last step is logged


def test_save_command_makes_the_trainer_save_and_go_on(tmp_dir):
    callback = RunforgeCallback()
    sender = Sender(callback, {2: "save"})
    trainer = make_trainer(tmp_dir, [sender, callback])
    trainer.train()
    assert sender.saved_at == [2] and trainer.state.global_step == 6
    assert (tmp_dir / "out" / "checkpoint-2" / "trainer_state.json").exists()
    assert read_json(callback.run_dir / "run.json")["status"] == "finished"
    assert "checkpoint saved:" in events(callback.run_dir)


def test_pause_holds_the_trainer_between_steps_until_resume(tmp_dir):
    callback = RunforgeCallback()
    sender = Sender(callback, {2: "pause"})
    resumed = []

    def resume_later():
        while "pause" not in sender.sent:
            time.sleep(0.01)
        time.sleep(0.6)
        resumed.append(time.monotonic())
        send(callback.run.dir, "resume")

    thread = threading.Thread(target=resume_later, daemon=True)
    thread.start()
    trainer = make_trainer(tmp_dir, [sender, callback], max_steps=4)
    trainer.train()
    thread.join(5)
    assert sender.step_times[3] >= resumed[0] > sender.step_times[2]
    assert taken_step(sender.sent["pause"]) == 2
    log = events(callback.run_dir)
    assert "training paused" in log and "training resumed" in log


def test_report_to_runforge_adds_the_callback(tmp_dir):
    trainer = make_trainer(tmp_dir, None, report_to="runforge", max_steps=2)
    callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, RunforgeCallback)]
    assert len(callbacks) == 1
    trainer.train()
    (run_dir,) = (tmp_dir / "runs").iterdir()
    assert run_dir == callbacks[0].run_dir
    assert read_json(run_dir / "run.json")["status"] == "finished"


def test_a_train_that_raised_is_marked_failed(tmp_dir):
    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("boom")

    callback = RunforgeCallback()
    trainer = make_trainer(tmp_dir, [Boom(), callback])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    first = callback.run_dir
    assert read_json(first / "run.json")["status"] == "running"  # no on_train_end: nothing told the callback
    trainer.remove_callback(Boom)
    trainer.train()  # the next train() (or the end of the process) settles the abandoned run
    info = read_json(first / "run.json")
    assert info["status"] == "failed" and "on_train_end" in info["error"]
    assert callback.run_dir != first and read_json(callback.run_dir / "run.json")["status"] == "finished"


def test_only_the_main_process_writes(tmp_dir):
    callback = RunforgeCallback()
    args = TrainingArguments(output_dir=str(tmp_dir / "out"), report_to=[], use_cpu=True, max_steps=3)
    state = TrainerState(max_steps=3, is_world_process_zero=False, is_local_process_zero=False)
    control = TrainerControl()
    callback.on_train_begin(args, state, control, model=tiny_model())
    state.global_step = 1
    callback.on_step_end(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
    callback.on_save(args, state, control)
    callback.on_train_end(args, state, control)
    assert callback.run is None and callback.run_dir is None
    assert not (tmp_dir / "runs").exists() and list(tmp_dir.iterdir()) == []


def test_split_logs():
    record = split_logs({"loss": 1.5, "grad_norm": 0.3, "learning_rate": 1e-4, "epoch": 0.5, "eval_loss": 2.0,
                         "eval_runtime": 0.1, "eval_other_loss": 3.0, "train_loss": 1.2, "total_flos": 7, "step": 9})
    assert record == {"loss": 1.5, "grad_norm": 0.3, "learning_rate": 1e-4, "epoch": 0.5,
                      "val": {"loss": 2.0, "runtime": 0.1, "other_loss": 3.0}, "train": {"loss": 1.2},
                      "total_flos": 7, "trainer_step": 9}


FLAGS_SCRIPT = """
import os, sys, types
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from runforge.integrations.huggingface import _flag_sharer
dist.init_process_group("gloo")
rank = dist.get_rank()
share = _flag_sharer(types.SimpleNamespace(world_size=2, device="cpu"))
mine = (True, False, True) if rank == 0 else (False, True, False)
print(rank, *map(int, share(*mine)))
dist.destroy_process_group()
"""


def test_control_flags_reach_every_process(tmp_path):
    # rank 0 alone reads the control folder; the others must set the same flags or their collectives hang
    assert _flag_sharer(type("Args", (), {"world_size": 1})()) is None
    script = FLAGS_SCRIPT.format(repo=str(REPO))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env={**env, "RANK": str(rank)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["0 1 0 1", "1 1 0 1"]


def test_importing_runforge_loads_neither_torch_nor_transformers():
    code = ("import sys, runforge, runforge.integrations; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
