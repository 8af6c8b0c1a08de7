"""`runforge.tensorboard.SummaryWriter` (the drop-in) and `runforge import-tb`, read back by TensorBoard's own
reader, by runforge's readers and by `runforge show`."""

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from torch.utils.tensorboard import SummaryWriter as TorchWriter
from torch.utils.tensorboard import summary as torch_summary

import runforge
from runforge.tensorboard import SummaryWriter

from conftest import run_cli, tree_digest

GUIDANCE = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}

# Typical torch usage, as tutorials write it; only its first line changes for runforge.
TORCH_SCRIPT = textwrap.dedent("""\
    from torch.utils.tensorboard import SummaryWriter
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter("runs/exp")
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for epoch in range(20):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        writer.add_scalar("Loss/train", loss, epoch)
        writer.add_scalar("Loss/test", loss.item() * 1.1, epoch)
        writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
        if epoch % 10 == 9:
            writer.add_histogram("weights", model.weight, epoch)
            writer.add_image("inputs", torch.rand(3, 8, 8), epoch)
            writer.add_images("batch", torch.rand(4, 3, 5, 5), epoch)
            writer.add_text("notes", f"epoch {epoch}", epoch)
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hparam/loss": loss.item()})
    writer.flush()
    writer.close()
""")


def _accumulator(folder):
    accumulator = EventAccumulator(str(folder), size_guidance=GUIDANCE)
    accumulator.Reload()
    return accumulator


def _the_run(root="runs"):
    runs = runforge.list_runs(root)
    assert len(runs) == 1, runs
    return Path(runs[0].dir)


def test_a_torch_script_switches_by_changing_only_its_import(tmp_dir):
    (tmp_dir / "torch_version.py").write_text(TORCH_SCRIPT)
    (tmp_dir / "runforge_version.py").write_text(TORCH_SCRIPT.replace(
        "from torch.utils.tensorboard import SummaryWriter", "from runforge.tensorboard import SummaryWriter"))
    (tmp_dir / "torch").mkdir()
    for script, cwd in (("torch_version.py", tmp_dir / "torch"), ("runforge_version.py", tmp_dir)):
        done = subprocess.run([sys.executable, str(tmp_dir / script)], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr

    run_dir = tmp_dir / "runs" / "exp"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["trainer"] == "summarywriter"
    lines = runforge.read_metrics(run_dir)
    assert [line["step"] for line in lines if "Loss/train" in line] == list(range(20))
    assert all({"Loss/train", "Loss/test", "lr"} <= set(line) for line in lines[:20])  # one line per step
    assert json.loads((run_dir / "config.json").read_text()) == {"lr": 0.1, "optimizer": "sgd"}
    assert sorted(p.name for p in runforge.run.list_images(run_dir)) == [
        "step_0009_batch.png", "step_0009_inputs.png", "step_0019_batch.png", "step_0019_inputs.png"]
    assert 'text notes at step 19: "epoch 19"' in (run_dir / "events.log").read_text()

    ours, theirs = _accumulator(run_dir / "tb"), _accumulator(tmp_dir / "torch" / "runs" / "exp")
    for kind in ("scalars", "images", "histograms"):
        assert set(theirs.Tags()[kind]) <= set(ours.Tags()[kind]), kind
    assert [e.value for e in ours.Scalars("Loss/train")] == pytest.approx([e.value for e in theirs.Scalars("Loss/train")])
    assert "notes/text_summary" in ours.Tags()["tensors"]


def test_tensorboards_reader_sees_scalars_images_histograms_and_hparams(tmp_dir):
    with SummaryWriter("runs/r") as writer:
        for step in range(1, 6):
            writer.add_scalar("loss", 1.0 / step, step)
            writer.add_scalars("lr", {"head": 0.1 * step, "body": 0.01}, step)
        writer.add_image("samples/a", np.full((3, 4, 6), 0.5, dtype=np.float32), 5)
        writer.add_histogram("weights", torch.arange(100.0), 5)
        writer.add_hparams({"lr": 0.1, "opt": "adam", "amp": True}, {"hparam/best": 0.25},
                           hparam_domain_discrete={"opt": ["adam", "sgd"]})
    tb = _accumulator(tmp_dir / "runs" / "r" / "tb")
    assert set(tb.Tags()["scalars"]) == {"loss", "lr/head", "lr/body", "hparam/best"}
    assert [e.step for e in tb.Scalars("loss")] == [1, 2, 3, 4, 5]
    assert tb.Scalars("lr/head")[-1].value == pytest.approx(0.5)
    image = tb.Images("samples/a")[0]
    assert (image.step, image.width, image.height) == (5, 6, 4)
    histogram = tb.Histograms("weights")[0].histogram_value
    assert (histogram.min, histogram.max, histogram.num, histogram.sum) == (0.0, 99.0, 100.0, 4950.0)
    assert sum(histogram.bucket) == 100 and list(histogram.bucket_limit) == sorted(histogram.bucket_limit)

    content = tb.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["lr"].number_value == 0.1 and start.hparams["opt"].string_value == "adam"
    assert start.hparams["amp"].bool_value is True
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/best"]
    assert {h.name for h in experiment.hparam_infos} == {"lr", "opt", "amp"}
    opt = next(h for h in experiment.hparam_infos if h.name == "opt")
    assert [v.string_value for v in opt.domain_discrete.values] == ["adam", "sgd"]
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS


def test_train_jsonl_holds_the_scalars_one_line_per_step_with_auto_steps(tmp_dir):
    writer = SummaryWriter()
    for _ in range(3):
        writer.add_scalar("a/b", 1.5)  # no global_step: 0, 1, 2 per tag, as the tag's own count
        writer.add_scalar("c", np.float32(2.0))
    writer.add_scalar("time", 7.0, 10)  # a reserved train.jsonl key
    writer.add_scalar("x", torch.tensor(3.0), 10)
    writer.close()
    run_dir = _the_run()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    lines = [{k: v for k, v in line.items() if k != "time"} for line in runforge.read_metrics(run_dir)]
    assert lines == [{"step": 0, "a/b": 1.5, "c": 2.0}, {"step": 1, "a/b": 1.5, "c": 2.0},
                     {"step": 2, "a/b": 1.5, "c": 2.0}, {"step": 10, "time_": 7.0, "x": 3.0}]


def test_a_line_waiting_for_more_tags_is_logged_after_a_second(tmp_dir):
    writer = SummaryWriter("runs/r")
    writer.add_scalar("val/acc", 0.5, 1)
    deadline = time.monotonic() + 10
    while not runforge.read_metrics("runs/r") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runforge.read_metrics("runs/r")[0]["val/acc"] == 0.5
    writer.close()


def test_a_log_dir_that_holds_a_run_is_not_appended_to(tmp_dir):
    for _ in range(2):
        with SummaryWriter("runs/exp") as writer:
            writer.add_scalar("loss", 1.0, 0)
    assert sorted(p.name for p in (tmp_dir / "runs").iterdir()) == ["exp", "exp-2"]
    assert writer.log_dir.endswith("exp-2") and writer.get_logdir() == writer.log_dir


@pytest.mark.parametrize("shape,dataformats", [
    ((3, 5, 7), "CHW"), ((5, 7, 3), "HWC"), ((5, 7), "HW"), ((1, 5, 7), "CHW"), ((5, 7, 4), "HWC"),
    ((3, 3, 5, 7), "NCHW"), ((10, 5, 7, 3), "NHWC"), ((2, 1, 5, 7), "NCHW"),
])
@pytest.mark.parametrize("kind", ["float", "uint8", "tensor"])
def test_dataformats_give_the_pixels_torch_gives(tmp_dir, shape, dataformats, kind):
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    data = rng.random(shape, dtype=np.float32)
    data.flat[0] = 1.7  # out of range: clipped
    if kind == "uint8":
        data = (data * 255).astype(np.uint8)
    value = torch.from_numpy(data) if kind == "tensor" else data
    with SummaryWriter("runs/r") as writer:
        (writer.add_images if "N" in dataformats else writer.add_image)("img", value, 3, dataformats=dataformats)
    ours = np.asarray(Image.open(tmp_dir / "runs" / "r" / "images" / "step_0003_img.png").convert("RGBA"))
    if shape[-1] == 4 and dataformats == "HWC":
        expected = np.asarray(Image.fromarray(
            (data if kind == "uint8" else (data * 255).clip(0, 255)).astype(np.uint8), "RGBA"))
    else:
        summary = torch_summary.image("img", value, dataformats=dataformats)
        expected = np.asarray(Image.open(io.BytesIO(summary.value[0].image.encoded_image_string)).convert("RGBA"))
    assert ours.shape == expected.shape and np.array_equal(ours, expected)
    tb_image = _accumulator(tmp_dir / "runs" / "r" / "tb").Images("img")[0]
    assert (tb_image.height, tb_image.width) == expected.shape[:2]


def test_add_figure_is_an_image(tmp_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(2, 1), dpi=50)
    plt.plot([0, 1], [1, 0])
    with SummaryWriter("runs/r") as writer:
        writer.add_figure("plot", figure, 1)
    with Image.open(tmp_dir / "runs" / "r" / "images" / "step_0001_plot.png") as picture:
        assert picture.size == (100, 50)
    assert not plt.get_fignums()  # closed, as torch does


def _torch_logdir(tmp_dir):
    writer = TorchWriter(str(tmp_dir / "tblogs" / "exp1"))
    for step in range(5):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalars("lr", {"head": 0.5, "body": 0.25}, step)
    writer.add_image("sample", torch.zeros(3, 4, 4), 4)
    writer.add_histogram("w", torch.randn(50), 4)
    writer.add_hparams({"lr": 0.5, "opt": "sgd"}, {"hparam/acc": 0.75})
    writer.close()
    second = TorchWriter(str(tmp_dir / "tblogs" / "exp2"))
    second.add_scalar("x", 2.0, 7)
    second.close()


def test_import_tb_of_torch_event_files_gives_runs_that_show_reads(tmp_dir):
    _torch_logdir(tmp_dir)
    done = run_cli("import-tb", "tblogs", "--root", "imported", cwd=tmp_dir)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    runs = {r.name: Path(r.dir) for r in runforge.list_runs(tmp_dir / "imported")}
    assert set(runs) == {"exp1", "exp2"}
    shown = run_cli("show", runs["exp1"], "--json", cwd=tmp_dir)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["run"]["status"] == "finished" and report["run"]["trainer"] == "tensorboard"
    assert report["config"] == {"lr": 0.5, "opt": "sgd"}
    assert report["images"] == 1 and report["logged_lines"] == 5
    lines = runforge.read_metrics(runs["exp1"])
    assert [line["step"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[1]["loss"] == 0.5 and lines[1]["lr/head"] == 0.5 and lines[1]["lr/body"] == 0.25
    assert lines[0]["hparam/acc"] == 0.75
    copied = _accumulator(runs["exp1"] / "tb")
    assert [e.value for e in copied.Scalars("loss")][-1] == pytest.approx(0.2)
    assert runforge.read_metrics(runs["exp2"])[0]["x"] == 2.0

    again = run_cli("import-tb", "tblogs", "--root", "imported", cwd=tmp_dir)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    assert len(runforge.list_runs(tmp_dir / "imported")) == 2


def test_import_tb_of_a_drop_in_run_keeps_its_tags(tmp_dir):
    with SummaryWriter("src/r") as writer:
        for step in range(3):
            writer.add_scalar("a/b", float(step), step)
    done = run_cli("import-tb", "src/r/tb", "--root", "imported", "--name", "copy", cwd=tmp_dir)
    assert done.returncode == 0, done.stderr
    run_dir = _the_run(tmp_dir / "imported")
    assert [line["a/b"] for line in runforge.read_metrics(run_dir)] == [0.0, 1.0, 2.0]


def _damaged(tmp_dir):
    _torch_logdir(tmp_dir)
    path = next((tmp_dir / "tblogs" / "exp2").glob("events.out.tfevents.*"))
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF
    path.write_bytes(bytes(data))
    return "tblogs", path.name


@pytest.mark.parametrize("case", ["missing", "a file", "no events", "damaged", "bad name", "root is a file"])
def test_import_tb_bad_input_is_one_line_exit_2_and_nothing_written(tmp_dir, case):
    (tmp_dir / "empty").mkdir()
    (tmp_dir / "file.txt").write_text("x")
    args, named = {
        "missing": (["nope"], "nope"),
        "a file": (["file.txt"], "file.txt"),
        "no events": (["empty"], "empty"),
        "bad name": (["empty", "--name", "../up"], "--name"),
        "root is a file": (["empty", "--root", "file.txt"], "--root"),
    }.get(case, (None, None))
    if case == "damaged":
        logdir, named = _damaged(tmp_dir)
        args = [logdir]
    before = tree_digest(tmp_dir)
    done = run_cli("import-tb", *args, cwd=tmp_dir)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runforge: error: ") and named in lines[0], lines
    assert tree_digest(tmp_dir) == before
