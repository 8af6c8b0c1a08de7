"""`runforge view`: the loaders against hand-worked values, refused inputs, and the viser page in headless chromium."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("viser", reason="viser is not installed (pip install 'runforge[view]')")
plyfile = pytest.importorskip("plyfile")

from monitor_helpers import canvas_variance, wait_for_scene, webgl_browser  # noqa: E402,F401  (a fixture)
from runforge.errors import BadInputError  # noqa: E402
from runforge.view import view_command  # noqa: E402
from runforge.view.load import find_source, load_boxes, load_splats  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"runforge view: (http://\S+)/ ")


def _map(path: Path, blocks, size=(4, 3, 5), block_size=1.0) -> Path:
    doc = {"sequence": 1, "worldConfig": {"size": list(size), "blockSize": block_size},
           "blocks": [{"position": list(p), "blockType": t} for p, t in blocks], "metadata": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _ply(path: Path, rows: list[dict[str, float]], drop: tuple[str, ...] = ()) -> Path:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    names = [n for n in names if n not in drop]
    vertex = np.zeros(len(rows), dtype=[(n, "f4") for n in names])
    for i, row in enumerate(rows):
        for key, value in row.items():
            if key in names:
                vertex[key][i] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


def _view(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "runforge", "view", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ---------------------------------------------------------------- loaders

def test_voxel_map_becomes_boxes_with_centres_colours_and_hidden_blocks(tmp_path):
    # a solid 3x3x3 cube of Stone in a 5x5x5 world, one Grass and one Water block elsewhere, blockSize 2
    cube = [((x, y, z), "Stone") for x in range(1, 4) for y in range(0, 3) for z in range(1, 4)]
    path = _map(tmp_path / "map.json", cube + [((0, 4, 0), "Grass"), ((4, 4, 4), "Water")],
                size=(5, 5, 5), block_size=2.0)
    boxes = load_boxes(path)
    assert len(boxes.centers) == 29 and boxes.size == (5, 5, 5) and boxes.block_size == 2.0
    by_position = {tuple(c): (tuple(col), bool(e)) for c, col, e in
                   zip(boxes.centers.tolist(), boxes.colors.tolist(), boxes.exposed)}
    # centre of block [x, y, z] is (x + 0.5) * blockSize; colours are the palette's RGB x 255, rounded
    assert by_position[(1.0, 9.0, 1.0)] == ((89, 166, 61), True)    # Grass (0.35, 0.65, 0.24)
    assert by_position[(9.0, 9.0, 9.0)] == ((51, 102, 209), True)   # Water (0.20, 0.40, 0.82)
    assert by_position[(5.0, 3.0, 5.0)] == ((128, 128, 135), False)  # the cube's centre: never seen
    assert by_position[(5.0, 1.0, 5.0)][1]  # bottom middle: its face on the world's floor is seen from below
    assert int((~boxes.exposed).sum()) == 1
    assert boxes.centers.dtype == np.float32 and boxes.colors.dtype == np.uint8


def test_the_bundled_sample_map_gives_one_box_per_block():
    path = REPO / "runforge/trainers/voxel/sample/map1/map.json"
    doc = json.loads(path.read_text())
    boxes = load_boxes(path)
    assert len(boxes.centers) == len(doc["blocks"]) == 3525
    kinds = [b["blockType"] for b in doc["blocks"]]
    assert sum(1 for c in boxes.colors.tolist() if c == [189, 145, 84]) == kinds.count("Plank")  # (0.74, 0.57, 0.33)
    assert 0 < int(boxes.exposed.sum()) < 3525  # the terrain's inside is culled


def test_splat_ply_gets_the_3dgs_activations(tmp_path):
    c0 = 0.28209479177387814
    half = math.sqrt(0.5)
    rows = [
        # log-scales of 1, 2, 3 turned 90 degrees about z (quaternion w, x, y, z, given unnormalised x2):
        # x and y swap, so the covariance is diag(4, 1, 9)
        {"x": 1, "y": 2, "z": 3, "f_dc_0": 0, "f_dc_1": 0.5 / c0, "f_dc_2": 9.0, "opacity": 0.0,
         "scale_0": 0.0, "scale_1": math.log(2), "scale_2": math.log(3),
         "rot_0": 2 * half, "rot_1": 0, "rot_2": 0, "rot_3": 2 * half},
        # identity rotation, isotropic 0.1; opacity logit ln 3 -> 0.75; colour below 0 is clipped
        {"x": -1, "y": 0, "z": 0.5, "f_dc_0": -0.5 / c0, "f_dc_1": -5.0, "f_dc_2": 0.25 / c0, "opacity": math.log(3),
         "scale_0": math.log(0.1), "scale_1": math.log(0.1), "scale_2": math.log(0.1),
         "rot_0": 1, "rot_1": 0, "rot_2": 0, "rot_3": 0},
    ]
    splats = load_splats(_ply(tmp_path / "point_cloud_7.ply", rows))
    np.testing.assert_allclose(splats.centers, [[1, 2, 3], [-1, 0, 0.5]], atol=1e-6)
    np.testing.assert_allclose(splats.covariances[0], np.diag([4.0, 1.0, 9.0]), atol=1e-5)
    np.testing.assert_allclose(splats.covariances[1], np.eye(3) * 0.01, atol=1e-6)
    np.testing.assert_allclose(splats.opacities, [[0.5], [0.75]], atol=1e-6)
    np.testing.assert_allclose(splats.rgbs, [[0.5, 1.0, 1.0], [0.0, 0.0, 0.75]], atol=1e-5)
    assert splats.opacities.shape == (2, 1) and splats.covariances.shape == (2, 3, 3)


def test_what_a_path_holds(tmp_path):
    run = tmp_path / "run"
    for step in (10, 9, 100):  # number order, not name order
        _map(run / "maps" / f"step_{step}.json", [((0, 0, 0), "Stone")])
    _map(run / "final_map.json", [((0, 0, 0), "Stone")])
    source = find_source(run)
    assert source.kind == "voxel" and [f.label for f in source.frames] == ["step 9", "step 10", "step 100", "final"]
    splat = tmp_path / "splat"
    for step in (30000, 7000):
        _ply(splat / "ply" / f"point_cloud_{step}.ply", [{"rot_0": 1}])
    assert [f.step for f in find_source(splat).frames] == [7000, 30000] and find_source(splat).kind == "splat"
    export = _map(tmp_path / "maps" / "trained_map_1_0" / "map.json", [((0, 0, 0), "Dirt")]).parent
    assert find_source(export).frames[0].path.name == "map.json"
    with pytest.raises(BadInputError, match="holds nothing to view"):
        find_source(tmp_path / "maps")
    assert view_command("voxel", "/r/a b") == "runforge view '/r/a b'" and view_command("sr", "/r") is None


def test_final_map_merges_with_the_last_step_and_step_picks_per_run(tmp_path):
    from runforge.view.cli import _frame_at
    from runforge.view.scene import load_all, merge_final

    run = tmp_path / "run"
    _map(run / "maps" / "step_5.json", [((0, 0, 0), "Stone")])
    _map(run / "maps" / "step_10.json", [((0, 0, 0), "Sand")])
    _map(run / "final_map.json", [((0, 0, 0), "Sand")])
    source = find_source(run)
    merged, items = merge_final(source, load_all([source])[0])
    assert [f.label for f in merged.frames] == ["step 5", "step 10 (final)"] and len(items) == 2
    _map(run / "final_map.json", [((1, 0, 0), "Sand")])  # a final map that differs keeps its own position
    source = find_source(run)
    assert [f.label for f in merge_final(source, load_all([source])[0])[0].frames] == ["step 5", "step 10", "final"]
    assert [_frame_at(merged, step) for step in (5, 7, 10, 3)] == [0, 0, 1, 0]


# ---------------------------------------------------------------- refused inputs

def _busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("case", ["not-a-run", "missing", "damaged-map", "damaged-ply", "not-3dgs-ply",
                                  "nan-ply", "bad-step", "port-in-use", "three-runs", "step-not-int"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    run = tmp_path / "run"
    _map(run / "maps" / "step_3.json", [((0, 0, 0), "Stone")])
    args, expect, busy = [run], None, None
    if case == "not-a-run":
        (tmp_path / "empty").mkdir()
        args, expect = [tmp_path / "empty"], "holds nothing to view"
    elif case == "missing":
        args, expect = [tmp_path / "nope"], "no such run"
    elif case == "damaged-map":
        (run / "final_map.json").write_text('{"blocks": [{"position": [0, 0], "blockType": "Stone"}]}')
        expect = "final_map.json: blocks[0]: position"
    elif case == "damaged-ply":
        ply = _ply(tmp_path / "s" / "ply" / "point_cloud_1.ply", [{"rot_0": 1}] * 50)
        ply.write_bytes(ply.read_bytes()[:-300])
        args, expect = [tmp_path / "s"], "point_cloud_1.ply: is not a readable PLY"
    elif case == "not-3dgs-ply":
        args = [_ply(tmp_path / "x.ply", [{"rot_0": 1}], drop=("opacity", "rot_3"))]
        expect = "x.ply: is not a 3DGS PLY: missing opacity, rot_3"
    elif case == "nan-ply":
        args, expect = [_ply(tmp_path / "n.ply", [{"rot_0": 1}, {"x": math.nan}])], "property x holds a NaN"
    elif case == "bad-step":
        args, expect = [run, "--step", "4"], f"--step: no saved step 4 (saved steps: {run}: 3)"
    elif case == "port-in-use":
        busy = _busy_port()
        args, expect = [run, "--port", busy.getsockname()[1]], "--port: cannot listen on 127.0.0.1"
    elif case == "three-runs":
        args, expect = [run, run, run], "at most two runs"
    elif case == "step-not-int":
        args, expect = [run, "--step", "x"], "argument --step"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        result = _view(*args)
    finally:
        if busy:
            busy.close()
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0] and expect in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------- the real thing in chromium

class Viewer:
    def __init__(self, *args):
        env = {**os.environ, "NO_COLOR": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "runforge", "view", *map(str, args), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        match = URL_LINE.search(line)
        if not match:
            self.stop()
            raise AssertionError(f"no URL line: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=15)  # also closes the pipes
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        return self.proc.returncode


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _screenshot_variance(driver, path: Path) -> float:
    from PIL import Image

    driver.save_screenshot(str(path))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return float(pixels.var(axis=(0, 1)).mean())


def _look(driver, url: str, shot: Path) -> float:
    driver.get(url + "/")
    variance = wait_for_scene(driver)
    assert _screenshot_variance(driver, shot) > 20
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    host = url.split("//", 1)[1]
    assert all(host in name or name.startswith(("data:", "blob:")) for name in resources), resources
    return variance


def test_view_a_tiny_voxel_run_and_a_ply_in_chromium(tmp_path, webgl_browser):
    browser = webgl_browser
    work = tmp_path / "work"
    work.mkdir()
    voxel_run = tmp_path / "runs" / "voxel-run"
    train = subprocess.run([sys.executable, "-m", "runforge", "train", "voxel", "--preset", "tiny",
                            "--out", str(voxel_run)], cwd=work, capture_output=True, text=True, timeout=240)
    assert train.returncode == 0, train.stderr[-2000:]
    rng = np.random.default_rng(0)
    rows = [{"x": x, "y": y, "z": z, "f_dc_0": r, "f_dc_1": g, "f_dc_2": -1.0, "opacity": 3.0,
             "scale_0": -2.5, "scale_1": -2.5, "scale_2": -2.5, "rot_0": 1.0}
            for x, y, z, r, g in zip(*rng.uniform(-1, 1, (3, 400)), *rng.uniform(-2, 2, (2, 400)))]
    ply = _ply(tmp_path / "splat-run" / "ply" / "point_cloud_100.ply", rows)

    viewer = Viewer(voxel_run, ply, "--step", "3")
    try:
        assert _look(browser, viewer.url, tmp_path / "both.png") > 20
        # the step slider and the labels of both runs are on the page
        text = browser.find_element("tag name", "body").text
        assert "voxel-run" in text and "point_cloud_100.ply" in text, text[:500]
        # moving the voxel run's slider to its last saved step: the server swaps the map and says which
        from selenium.webdriver.common.keys import Keys

        def values():
            return [(i.get_attribute("type"), i.get_attribute("value")) for i in browser.find_elements("tag name", "input")]

        assert ("text", "step 3") in values(), values()
        number = [i for i in browser.find_elements("tag name", "input")
                  if i.get_attribute("value") == "0" and i.is_displayed()][0]
        number.send_keys(Keys.CONTROL, "a")
        number.send_keys("1", Keys.ENTER)
        _wait(lambda: ("text", "step 6 (final)") in values(), 30, "the slider to show the final step")
        assert canvas_variance(browser) > 20
    finally:
        assert viewer.stop() in (0, -signal.SIGINT)
    viewer = Viewer(ply)
    try:
        assert _look(browser, viewer.url, tmp_path / "splat.png") > 20
    finally:
        viewer.stop()

    # the dashboard's run page shows the command for the voxel run
    from monitor_helpers import Server

    server = Server(str(tmp_path / "runs"))
    try:
        assert server.get_json("/api/run/voxel-run")["view_command"] == f"runforge view {voxel_run}"
        browser.get(server.url + "/run/voxel-run")
        shown = _wait(lambda: browser.execute_script(
            "const e = document.getElementById('view-command'); return e && !e.hidden && e.textContent"),
            30, "the 3D view command on the run page")
        assert shown.strip() == f"3D view: runforge view {voxel_run} open 3D view"
    finally:
        server.stop()


def test_the_run_api_offers_the_command_only_for_voxel_and_splat_runs(tmp_path):
    from monitor_helpers import Server, edit_info, make_run

    root = tmp_path / "runs"
    for name, trainer in (("v", "voxel"), ("s", "splat"), ("k", "kolmogorov"), ("u", None)):
        run_dir = make_run(root, name, steps=2)
        if trainer:
            edit_info(run_dir, trainer=trainer)
    server = Server(str(root))
    try:
        commands = {name: server.get_json(f"/api/run/{name}")["view_command"] for name in "vsku"}
    finally:
        server.stop()
    assert commands == {"v": f"runforge view {root / 'v'}", "s": f"runforge view {root / 's'}", "k": None, "u": None}
