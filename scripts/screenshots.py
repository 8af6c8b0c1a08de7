"""Screenshots of the dashboard for the docs: `python scripts/screenshots.py [--out docs/images]`.

Trains small real runs (three toy runs at different learning rates, sr, voxel, splat) into a temporary
root, serves them with `runforge serve`, and saves the main pages as seen by headless Debian chromium
(selenium): the runs table, a run page (charts), sr and splat images, compare, hparams, dark mode.
About two minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
QUIET = {**os.environ, "RUNFORGE_NO_KEYS": "1", "OMP_NUM_THREADS": "1"}
WIDTH = 1360


def runforge(*args: str) -> None:
    subprocess.run([PYTHON, "-m", "runforge", *args, "--progress", "off", "--no_tensorboard"] if args[0] == "train"
                   else [PYTHON, "-m", "runforge", *args], check=True, env=QUIET, stdout=subprocess.DEVNULL)


def make_runs(root: Path) -> None:
    from runforge.run.annotations import write_annotations

    for lr, tags in ((0.01, ["baseline"]), (0.05, ["sweep"]), (0.2, ["sweep", "high-lr"])):
        out = root / f"toy-lr{lr}"
        runforge("train", "toy", "--preset", "tiny", "--steps", "300", "--log_every", "2", "--lr", str(lr),
                 "--out", str(out))
        write_annotations(out, tags, f"toy fit at lr {lr}")
    runforge("train", "sr", "--preset", "tiny", "--steps", "40", "--out", str(root / "sr-tiny"))
    runforge("train", "voxel", "--preset", "tiny", "--steps", "30", "--out", str(root / "voxel-tiny"))
    scene = root.parent / "scene"
    runforge("data", "synthetic-scene", str(scene), "--images", "9", "--width", "64", "--height", "48")
    runforge("train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(root / "splat-tiny"))


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def shoot(driver, url: str, path: Path, *, ready: str, height: int = 900, script: str | None = None) -> None:
    """Open `url`, wait for the CSS selector `ready`, run `script`, and save a WIDTH x height picture."""
    from selenium.webdriver.common.by import By

    driver.set_window_size(WIDTH, height)
    driver.get(url)
    deadline = time.monotonic() + 60
    while not driver.find_elements(By.CSS_SELECTOR, ready):
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: {url} never showed {ready!r}")
        time.sleep(0.2)
    if script:
        driver.execute_script(script)
    time.sleep(2.5)  # a poll or two: charts drawn, images loaded
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        make_runs(root)
        server = subprocess.Popen([PYTHON, "-m", "runforge", "serve", str(root), "--port", "0"], env=QUIET,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        driver = None
        try:
            url = re.search(r"http://\S+?:\d+", server.stdout.readline()).group(0)
            driver = browser(Path(tmp) / "profile")
            driver.get(url)
            driver.execute_script("localStorage.setItem('runforge-columns', arguments[0]);"
                                  "localStorage.setItem('runforge-theme', 'light');", json.dumps(["lr"]))
            toys = ",".join(f"toy-lr{lr}" for lr in (0.01, 0.05, 0.2))
            shoot(driver, url + "/", args.out / "dashboard-runs.png", ready="#runs-table tr[data-key]", height=560)
            shoot(driver, url + "/run/sr-tiny", args.out / "dashboard-run.png", ready="#charts .chart .main-svg",
                  height=1300)
            shoot(driver, url + "/run/voxel-tiny", args.out / "dashboard-images.png", ready="#gallery img[src]",
                  height=900, script="document.getElementById('gallery').scrollIntoView()")
            shoot(driver, url + "/run/splat-tiny", args.out / "dashboard-splat.png", ready="#gallery video",
                  height=900, script="document.getElementById('gallery').scrollIntoView()")
            shoot(driver, f"{url}/compare?runs={toys}", args.out / "dashboard-compare.png",
                  ready="#compare-chart .main-svg", height=1000)
            shoot(driver, f"{url}/hparams?runs={toys}", args.out / "dashboard-hparams.png", ready="canvas",
                  height=800)
            driver.execute_script("localStorage.setItem('runforge-theme', 'dark')")
            shoot(driver, url + "/run/toy-lr0.05", args.out / "dashboard-dark.png", ready="#charts .chart .main-svg",
                  height=1000)
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
