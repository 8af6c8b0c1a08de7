"""The run page's "open 3D view": POST /api/run/{key}/view starts `runforge view` for a voxel or splat run,
reuses it, refuses what a control request refuses, keeps at most four, and none outlives the dashboard."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

pytest.importorskip("viser", reason="viser is not installed (pip install 'runforge[view]')")

from monitor_helpers import Server, css, edit_info, make_run, wait_for, wait_for_scene, webgl_browser  # noqa: E402,F401
from runforge.monitor.app import create_app  # noqa: E402
from runforge.monitor.viewers import MAX_VIEWERS  # noqa: E402

SAMPLE_MAP = Path(__file__).resolve().parents[2] / "runforge/trainers/voxel/sample/map1/map.json"
JSON = {"Content-Type": "application/json"}


def voxel_run(root: Path, name: str, maps: bool = True) -> Path:
    """A finished run that the dashboard takes for a voxel run, with the bundled sample map saved at step 1."""
    run_dir = make_run(root, name, steps=2)
    edit_info(run_dir, trainer="voxel")
    if maps:
        (run_dir / "maps").mkdir()
        shutil.copy(SAMPLE_MAP, run_dir / "maps" / "step_1.json")
    return run_dir


def post_view(server: Server, key: str, headers: dict[str, str] | None = None,
              body: bytes = b"{}") -> tuple[int, dict]:
    # starting a viewer (viser's import, the maps) takes seconds, more on a busy machine
    status, answer, _ = server.request("POST", f"/api/run/{key}/view", JSON if headers is None else headers, body,
                                       timeout=120)
    return status, json.loads(answer)


def children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) and stat[1] == str(pid) and stat[0] != "Z":
            found.append(int(entry))
    return found


def _stat(pid: int) -> list[str] | None:
    """State, parent pid, ... of a process from /proc (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces


def gone(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def page_of(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


def test_the_view_starts_a_viewer_that_a_second_click_reuses_and_shutdown_stops(tmp_path):
    root = tmp_path / "runs"
    voxel_run(root, "vox")
    server = Server(str(root))
    try:
        status, answer = post_view(server, "vox")
        assert status == 200, answer
        url = answer["url"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/") and url != server.url + "/"
        code, page = page_of(url)
        assert code == 200 and "<title>Viser</title>" in page
        viewer_pids = children(server.proc.pid)
        assert len(viewer_pids) == 1
        assert post_view(server, "vox") == (200, {"url": url})  # the same viewer, not a second one
        via_localhost = {**JSON, "Host": f"localhost:{server.port}"}  # the name the browser used stays
        assert post_view(server, "vox", via_localhost) == (200, {"url": url.replace("127.0.0.1", "localhost")})
        assert children(server.proc.pid) == viewer_pids
    finally:
        server.stop()  # SIGTERM, as a service manager stops it
    wait_for(lambda: all(gone(pid) for pid in viewer_pids), 15, what="the viewer to exit with the dashboard")
    assert page_of(url)[0] == 0


def test_at_most_four_viewers_the_least_recently_asked_for_is_stopped(tmp_path):
    root = tmp_path / "runs"
    keys = [f"vox{i}" for i in range(MAX_VIEWERS + 1)]
    for key in keys:
        voxel_run(root, key)
    server = Server(str(root))
    try:
        urls = {}
        for key in keys[:MAX_VIEWERS]:
            status, answer = post_view(server, key)
            assert status == 200, answer
            urls[key] = answer["url"]
        assert post_view(server, keys[0]) == (200, {"url": urls[keys[0]]})  # now vox1 is the least recent
        assert len(children(server.proc.pid)) == MAX_VIEWERS
        status, answer = post_view(server, keys[-1])
        assert status == 200, answer
        wait_for(lambda: page_of(urls[keys[1]])[0] == 0, 15, what="the least recently asked-for viewer to stop")
        assert len(children(server.proc.pid)) == MAX_VIEWERS
        assert [page_of(urls[key])[0] for key in (keys[0], keys[2], keys[3])] == [200, 200, 200]
        assert page_of(answer["url"])[0] == 200
    finally:
        server.stop()


def test_bad_requests_are_refused_and_start_nothing(tmp_path):
    root = tmp_path / "runs"
    voxel_run(root, "vox")
    voxel_run(root, "empty", maps=False)
    edit_info(make_run(root, "sr", steps=2), trainer="sr")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(SAMPLE_MAP, outside / "step_1.json")
    (voxel_run(root, "linked", maps=False) / "maps").symlink_to(outside)
    (voxel_run(root, "damaged") / "maps" / "step_2.json").write_text('{"blocks": 3}', encoding="utf-8")
    server = Server(str(root))
    cases = [
        ("vox", {}, b"{}", 415, "view requests must be JSON (application/json)"),
        ("vox", {"Content-Type": "text/plain"}, b"{}", 415, "must be JSON"),
        ("vox", {**JSON, "Origin": "http://evil.example"}, b"{}", 403,
         "refused: view request from another origin ('http://evil.example')"),
        ("vox", JSON, b"[]", 400, "the body must be a JSON object"),
        ("vox", JSON, b'{"command": "pause"}', 400, "the body's command 'pause' is not the URL's 'view'"),
        ("nope", JSON, b"{}", 404, "no run 'nope' under the served roots"),
        ("sr", JSON, b"{}", 404, "run sr (sr trainer) has no 3D view: only voxel and splat runs have one"),
        ("empty", JSON, b"{}", 404, "run empty has nothing to view yet: no maps/step_*.json"),
        ("linked", JSON, b"{}", 403, "refused: step_1.json of run linked links out of the run"),
        ("damaged", JSON, b"{}", 422, "runforge view could not show the run: runforge: error: "
                                      f"{root / 'damaged' / 'maps' / 'step_2.json'}: "),
    ]
    try:
        for key, headers, body, status, message in cases:
            got, answer = post_view(server, key, headers, body)
            assert (got, message in answer.get("error", "")) == (status, True), (key, headers, body, answer)
        assert children(server.proc.pid) == []
    finally:
        server.stop()


def outward_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing); None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_dashboard_on_all_interfaces_opens_the_viewer_where_the_browser_reached_it(tmp_path):
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    root = tmp_path / "runs"
    voxel_run(root, "vox")
    server = Server(str(root), "--host", "0.0.0.0")
    try:
        request = urllib.request.Request(f"http://{address}:{server.port}/api/run/vox/view", data=b"{}",
                                         headers={**JSON, "X-Runforge-Token": server.token}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            url = json.loads(response.read())["url"]
        assert url.startswith(f"http://{address}:")
        assert page_of(url)[0] == 200
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert page_of(f"http://127.0.0.1:{port}/")[0] == 0  # it listens where the browser came in, no wider
        assert post_view(server, "vox", JSON)[0] == 403  # and still needs the token
    finally:
        server.stop()


def test_without_viser_the_answer_says_what_to_install(tmp_path, monkeypatch):
    voxel_run(tmp_path / "runs", "vox")
    monkeypatch.setitem(sys.modules, "viser", None)  # as if it were not installed: find_spec finds nothing
    app = create_app([tmp_path / "runs"], warm_runs=0)
    with TestClient(app) as client:
        response = client.post("/api/run/vox/view", headers=JSON, content=b"{}")
    assert response.status_code == 501
    assert response.json() == {"error": "the 3D view needs viser, which this dashboard's Python lacks: "
                                        "pip install 'runforge[view]'"}
    assert app.state.viewers.running == {}


def test_the_run_page_button_opens_the_viewer_in_a_new_tab(tmp_path, webgl_browser):
    browser = webgl_browser
    root = tmp_path / "runs"
    voxel_run(root, "vox")
    server = Server(str(root))
    try:
        browser.get(server.url + "/run/vox")
        button = wait_for(lambda: css(browser, "#view-open"), 30, what="the open 3D view button")[0]
        assert button.text == "open 3D view"
        page = browser.current_window_handle
        button.click()
        link = wait_for(lambda: (a := css(browser, "#view-link")) and a[0].is_displayed() and a[0], 90,
                        what="the viewer's link on the run page")
        url = link.text
        assert url.startswith("http://127.0.0.1:") and link.get_attribute("href") == url
        assert css(browser, "#view-msg")[0].text == ""
        tab = wait_for(lambda: [h for h in browser.window_handles if h != page], 30, what="the new tab")[0]
        browser.switch_to.window(tab)
        wait_for(lambda: browser.current_url == url, 30, what="the new tab to open the viewer")
        assert wait_for_scene(browser) > 20  # the sample map drawn, not a blank canvas
    finally:
        server.stop()


def test_the_run_page_shows_why_a_viewer_cannot_start(tmp_path, webgl_browser):
    browser = webgl_browser
    root = tmp_path / "runs"
    voxel_run(root, "empty", maps=False)
    server = Server(str(root))
    try:
        browser.get(server.url + "/run/empty")
        wait_for(lambda: css(browser, "#view-open"), 30, what="the open 3D view button")[0].click()
        message = wait_for(lambda: css(browser, "#view-msg.error")[0].text if css(browser, "#view-msg.error") else "",
                           30, what="the error on the run page")
        assert message.startswith("run empty has nothing to view yet")
        assert len(browser.window_handles) == 1  # the tab opened at the click is closed again
        assert not css(browser, "#view-link")[0].is_displayed()
    finally:
        server.stop()
