"""The run page's images and videos: one series per image kind with the camera as caption, click to
enlarge, sr's labelled panels, splat's validation renders and trajectory video."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from monitor_helpers import (HAS_CHROMIUM, NO_CHROMIUM, browser, css, make_run, open_page, severe_logs,  # noqa: F401
                             wait_for)
from runforge.monitor.app import create_app

VOXEL_SHOTS = {1: "cam20", 2: "cam23", 10: "cam4", 12: "cam20"}
"""step -> camera of a voxel run's images (it renders one camera per image step)."""
SR_PANELS = ["LR (bicubic)", "SR (model)", "HR"]


def png(path: Path, width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


def voxel_like(root: Path) -> Path:
    """A run with voxel's image names (one camera per step) and a `fit` image, 32×32 each."""
    run_dir = make_run(root, "voxel", steps=12)
    for step, camera in VOXEL_SHOTS.items():
        png(run_dir / "images" / f"step_{step:04d}_{camera}.png", 32, 32, (step * 20, 80, 160))
    png(run_dir / "images" / "step_0012_fit.png", 32, 32)
    return run_dir


def sr_like(root: Path) -> Path:
    """A run with sr's validation image: bicubic | model | HR of a 32×32 crop, side by side."""
    run_dir = make_run(root, "sr", steps=8)
    png(run_dir / "images" / "step_0008_val_bicubic_model_hr.png", 96, 32)
    return run_dir


def splat_like(root: Path, outside: Path) -> Path:
    """A run with splat's renders/ (GT | render pairs per held-out view, a trajectory video) and
    one render that links out of the run."""
    run_dir = make_run(root, "splat", steps=8)
    for step in (3, 7):
        for view in ("000", "001"):
            png(run_dir / "renders" / f"val_step{step}" / f"{view}.png", 64, 24)
    (run_dir / "renders" / "traj_interp_step7.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    (run_dir / "renders" / "val_step7" / "002.png").symlink_to(png(outside / "secret.png", 8, 8))
    (run_dir / "renders" / "notes.txt").write_text("not media")
    return run_dir


# ----------------------------------------------------------------------------- the API


def test_media_groups_images_by_kind_with_the_view_as_caption(tmp_path):
    root = tmp_path / "runs"
    voxel_like(root), sr_like(root), splat_like(root, tmp_path / "outside")
    with TestClient(create_app([root], warm_runs=0)) as client:
        voxel = client.get("/api/run/voxel").json()
        sr = client.get("/api/run/sr").json()["media"]
        splat = client.get("/api/run/splat").json()["media"]
    assert voxel["media"] == [
        {"kind": "cam", "panels": None, "video": False,
         "shots": [{"step": step, "view": camera, "file": f"images/step_{step:04d}_{camera}.png"}
                   for step, camera in VOXEL_SHOTS.items()]},
        {"kind": "fit", "panels": None, "video": False,
         "shots": [{"step": 12, "view": None, "file": "images/step_0012_fit.png"}]}]
    assert set(voxel["images"]) == {"cam20", "cam23", "cam4", "fit"}  # the per-name listing is unchanged
    assert sr == [{"kind": "val_bicubic_model_hr", "panels": SR_PANELS, "video": False,
                   "shots": [{"step": 8, "view": None, "file": "images/step_0008_val_bicubic_model_hr.png"}]}]
    assert splat == [
        {"kind": "validation renders", "panels": ["ground truth", "render"], "video": False,
         "shots": [{"step": step, "view": f"view {view}", "file": f"renders/val_step{step}/{view}.png"}
                   for step in (3, 7) for view in ("000", "001")]},  # 002 links out of the run: not listed
        {"kind": "traj_interp", "panels": None, "video": True,
         "shots": [{"step": 7, "view": None, "file": "renders/traj_interp_step7.mp4"}]}]


def test_a_renders_folder_that_links_out_of_the_run_lists_nothing(tmp_path):
    outside = splat_like(tmp_path / "elsewhere", tmp_path / "outside")
    run_dir = make_run(tmp_path / "runs", "linked", steps=3)
    (run_dir / "renders").symlink_to(outside / "renders")
    with TestClient(create_app([run_dir.parent], warm_runs=0)) as client:
        assert client.get("/api/run/linked").json()["media"] == []
        assert client.get("/api/run/linked/file/renders/val_step7/000.png").status_code == 403


def test_a_video_is_served_as_mp4_with_byte_ranges(tmp_path):
    run_dir = splat_like(tmp_path / "runs", tmp_path / "outside")
    video = (run_dir / "renders" / "traj_interp_step7.mp4").read_bytes()
    with TestClient(create_app([run_dir.parent], warm_runs=0)) as client:
        url = "/api/run/splat/file/renders/traj_interp_step7.mp4"
        whole = client.get(url)
        part = client.get(url, headers={"Range": "bytes=4-11"})
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4" and whole.content == video
    assert whole.headers["accept-ranges"] == "bytes"
    assert part.status_code == 206 and part.content == b"ftypmp42"
    assert part.headers["content-range"] == f"bytes 4-11/{len(video)}"


# ----------------------------------------------------------------------------- in chromium

needs_chromium = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)


def _width(driver, element) -> float:
    return driver.execute_script("return arguments[0].getBoundingClientRect().width", element)


@needs_chromium
def test_voxel_cameras_are_one_series_and_an_image_enlarges(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    voxel_like(tmp_path / "runs")
    with open_page(browser, tmp_path / "runs", "/run/voxel"):
        wait_for(lambda: css(browser, '#gallery figure[data-kind="cam"] img[src]'), what="the camera series")
        assert [f.get_attribute("data-kind") for f in css(browser, "#gallery figure")] == ["cam", "fit"]
        slider = css(browser, '.image-slider[data-kind="cam"]')[0]
        assert slider.get_attribute("max") == "3"  # four steps, whichever camera each shows

        def shown():
            figure = css(browser, '#gallery figure[data-kind="cam"]')[0]
            return (figure.find_element("css selector", ".view-caption").text,
                    figure.find_element("css selector", "figcaption .num").text)

        wait_for(lambda: shown() == ("cam20", "step 12 (4/4)"), what="the newest step")
        slider.send_keys(Keys.HOME)
        wait_for(lambda: shown() == ("cam20", "step 1 (1/4)"), what="the first step")
        slider.send_keys(Keys.ARROW_RIGHT)
        wait_for(lambda: shown() == ("cam23", "step 2 (2/4)"), what="the second step, another camera")

        image = css(browser, '#gallery figure[data-kind="cam"] img')[0]
        wait_for(lambda: _width(browser, image) == 384, what="the 32 px image shown 12 times larger")
        assert "pixelated" in image.get_attribute("class")
        image.click()
        lightbox = css(browser, "#lightbox")[0]
        big = css(browser, "#lightbox-image")[0]
        wait_for(lambda: lightbox.is_displayed() and _width(browser, big) > 384, what="the enlarged image")
        assert big.get_attribute("src") == image.get_attribute("src")
        assert css(browser, "#lightbox-caption")[0].text == "cam · cam23 · step 2 (2/4)"
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        wait_for(lambda: css(browser, "#lightbox-caption")[0].text == "cam · cam4 · step 10 (3/4)",
                 what="→ to step the enlarged series")
        assert shown() == ("cam4", "step 10 (3/4)")  # the gallery's slider moved with it
        ActionChains(browser).send_keys(Keys.ESCAPE).perform()
        wait_for(lambda: not lightbox.is_displayed(), what="Esc to close the enlarged view")
        css(browser, '#gallery figure[data-kind="fit"] img')[0].click()
        wait_for(lambda: lightbox.is_displayed(), what="the fit image enlarged")
        assert css(browser, "#lightbox-caption")[0].text == "fit · step 12 (1/1)"
        big.click()
        wait_for(lambda: not lightbox.is_displayed(), what="a click to close the enlarged view")
        assert not severe_logs(browser)


@needs_chromium
def test_sr_image_is_labelled_and_scaled_up(tmp_path, browser):
    sr_like(tmp_path / "runs")
    with open_page(browser, tmp_path / "runs", "/run/sr"):
        image = wait_for(lambda: css(browser, '#gallery figure[data-kind="val_bicubic_model_hr"] img[src]'),
                         what="the sr image")[0]
        labels = css(browser, '#gallery figure[data-kind="val_bicubic_model_hr"] .panels span')
        assert [label.text for label in labels] == SR_PANELS
        wait_for(lambda: _width(browser, image) == 4 * 96, what="the 96×32 image scaled up 4 times")
        # each label sits over its third of the image
        assert [round(_width(browser, label)) for label in labels] == [128, 128, 128]


@pytest.fixture(scope="module")
def splat_run(tmp_path_factory):
    """A real `runforge train splat --preset tiny` run (about 5 s here)."""
    torch = pytest.importorskip("torch")
    from runforge.cli import main
    from runforge.trainers.splat.scene import write_synthetic_scene

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("splat")
    scene = write_synthetic_scene(base / "scene", n_images=9, width=32, height=24, n_points=150)
    out = base / "runs" / "splat"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out),
                 "--progress", "lines", "--no_tensorboard"]) == 0
    return out


@needs_chromium
def test_a_finished_splat_run_shows_its_renders_and_video(splat_run, browser):
    with open_page(browser, splat_run.parent, "/run/splat") as server:
        figure = '#gallery figure[data-kind="validation renders"]'
        wait_for(lambda: len(css(browser, figure + " .shot img[src]")) == 2, what="both held-out views")
        assert "No images yet" not in css(browser, "#gallery")[0].text
        assert [c.text for c in css(browser, figure + " .view-caption")] == ["view 000", "view 001"]
        assert [s.text for s in css(browser, figure + " .shot:first-child .panels span")] == ["ground truth", "render"]
        assert css(browser, figure + " figcaption .num")[0].text == "step 7 (1/1)"

        video = wait_for(lambda: css(browser, '#gallery figure[data-kind="traj_interp"] video[controls]'),
                         what="the trajectory video")[0]
        src = video.get_attribute("src")
        assert src.startswith(server.url + "/api/run/splat/file/renders/traj_interp_step7.mp4")
        status, body, headers = server.request("GET", src.removeprefix(server.url), {"Range": "bytes=0-99"})
        assert (status, headers["content-type"], len(body)) == (206, "video/mp4", 100)
        wait_for(lambda: browser.execute_script("return arguments[0].readyState", video) >= 1,
                 what="the browser to read the video's metadata")
        assert browser.execute_script("return arguments[0].duration", video) > 0

        # a finished run: its bar full, its last 0-based step the step_max
        wait_for(lambda: css(browser, "#progress-text")[0].text.startswith("step 7 / 7"), what="the progress")
        bar = css(browser, "#progress")[0]
        assert bar.get_attribute("value") == bar.get_attribute("max") == "7"
        assert not severe_logs(browser)
