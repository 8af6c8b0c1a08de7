"""tb/ is read by TensorBoard's own reader: every scalar, every image, and a resume's purge."""

import io

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runforge
from runforge.run.tensorboard import EventFileWriter

from conftest import run_cli


def _load(logdir):
    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_scalars_and_images_round_trip_through_tensorboards_reader(tmp_dir):
    with runforge.Run(out="r") as run:
        for step in range(1, 51):
            run.log(step, {"loss": 1.0 / step, "losses": {"l1": 0.5 / step, "ssim": 0.25}, "note": "text is skipped",
                           "count": step})
        run.image(50, "cam3", [[[255, 0, 0], [0, 255, 0]]] * 3)
    tb = _load(tmp_dir / "r" / "tb")
    assert sorted(tb.Tags()["scalars"]) == ["count", "loss", "losses/l1", "losses/ssim"]
    loss = tb.Scalars("loss")
    assert [e.step for e in loss] == list(range(1, 51))
    assert abs(loss[9].value - 0.1) < 1e-7 and tb.Scalars("count")[-1].value == 50.0
    image = tb.Images("cam3")[0]
    assert (image.step, image.width, image.height) == (50, 2, 3)
    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.size == (2, 3) and decoded.getpixel((1, 0)) == (0, 255, 0)


def test_a_resumed_run_purges_the_steps_it_rewrites(tmp_dir):
    assert run_cli("train", "toy", "--out", "r", "--steps", "40", "--ckpt_every", "20", "--log_every", "5",
                   cwd=tmp_dir).returncode == 0
    assert run_cli("train", "toy", "--out", "r", "--resume", "r/ckpts/ckpt_20_rank0.pkl", "--steps", "40",
                   "--ckpt_every", "20", "--log_every", "5", cwd=tmp_dir).returncode == 0
    steps = [e.step for e in _load(tmp_dir / "r" / "tb").Scalars("loss")]
    assert steps == list(range(5, 41, 5)), steps
    assert [line["step"] for line in runforge.read_metrics(tmp_dir / "r") if "loss" in line] == list(range(5, 41, 5))


def test_record_framing_has_valid_checksums(tmp_path):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
    from tensorboard.compat.proto import event_pb2

    writer = EventFileWriter(tmp_path)
    writer.write(writer.encode_scalars(1.0, 7, {"x": 2.5}))
    writer.close()

    def read(path):
        reader = PyRecordReader_New(str(path))
        events = []
        while True:
            try:
                reader.GetNext()
            except Exception as exc:  # OutOfRangeError at the end, DataLossError on a bad checksum
                return events, type(exc).__name__
            events.append(event_pb2.Event.FromString(reader.record()))

    events, end = read(writer.path)
    assert end == "OutOfRangeError" and events[0].file_version == "brain.Event:2"
    assert events[1].step == 7 and events[1].summary.value[0].tag == "x"
    assert events[1].summary.value[0].simple_value == 2.5

    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF  # one flipped bit in the last event's payload
    writer.path.write_bytes(bytes(data))
    assert read(writer.path)[1] == "DataLossError"


def test_values_beyond_float32_and_bools_and_strings(tmp_dir):
    with runforge.Run(out="r") as run:
        run.log(1, {"huge": 1e300, "big_int": 10**40, "flag": True, "name": "x", "deep": {"a": {"b": 2}}})
    tb = _load(tmp_dir / "r" / "tb")
    assert sorted(tb.Tags()["scalars"]) == ["big_int", "deep/a/b", "huge"]
    assert tb.Scalars("huge")[0].value == float("inf") and tb.Scalars("deep/a/b")[0].value == 2.0
    assert runforge.read_metrics(tmp_dir / "r")[0]["huge"] == 1e300  # the log keeps the exact value
