"""The viser scene of `runforge view`: each source under its own node, side by side along x, Z up.

Every frame of every source is loaded before the server starts, so a damaged file is refused
on the command line (exit 2) and not discovered by a slider later; the scene holds one frame
per source at a time and swaps it when the slider moves.
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import BadInputError
from .load import Boxes, Frame, Source, Splats, load_frame

# map.json is Y-up and splat runs are normalised to Z-up (the splat trainer's --normalize_world_space);
# turning maps by +90 degrees about x (map y -> world z, map z -> world -y) lets both share the scene's +z.
_Y_UP_TO_Z_UP = (math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0)


@dataclass
class Shown:
    source: Source
    data: list[Any]
    index: int
    node: Any = None


def load_all(sources: list[Source]) -> list[list[Any]]:
    return [[load_frame(source.kind, frame.path) for frame in source.frames] for source in sources]


def merge_final(source: Source, items: list[Any]) -> tuple[Source, list[Any]]:
    """A finished voxel run saves its last step twice (maps/step_N.json and final_map.json): one slider
    position for both, labelled as final."""
    frames = source.frames
    if (source.kind != "voxel" or len(frames) < 2 or frames[-1].label != "final"
            or not _same_boxes(items[-1], items[-2])):
        return source, items
    last = frames[-2]
    merged = Frame(f"{last.label} (final)", last.step, last.path)
    return replace(source, frames=frames[:-2] + (merged,)), items[:-1]


def _same_boxes(a: Boxes, b: Boxes) -> bool:
    return (a.size == b.size and a.block_size == b.block_size and np.array_equal(a.centers, b.centers)
            and np.array_equal(a.materials, b.materials))


def bounds(kind: str, data: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """World-space (Z-up) box around every frame of one source, before its offset."""
    lows, highs = [], []
    for item in data:
        if kind == "voxel":
            sx, sy, sz = (np.array(item.size) * item.block_size).tolist()
            lows.append([0.0, -sz, 0.0])
            highs.append([sx, 0.0, sy])
        else:
            # a trained cloud keeps a few far-off splats (background, floaters): they must not set the spacing
            lows.append(np.percentile(item.centers, 1, axis=0))
            highs.append(np.percentile(item.centers, 99, axis=0))
    return np.min(lows, axis=0), np.max(highs, axis=0)


def layout(boxes: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Offsets that put each box to the right of the one before, centred on the first in y, bottoms level."""
    offsets = [np.zeros(3)]
    widths = [float(high[0] - low[0]) for low, high in boxes]
    gap = 0.15 * max(widths + [1e-6])
    for i in range(1, len(boxes)):
        (low0, high0), (low, high) = boxes[0], boxes[i]
        prev_right = boxes[i - 1][1][0] + offsets[i - 1][0]
        offsets.append(np.array([prev_right + gap - low[0],
                                 (low0[1] + high0[1]) / 2 - (low[1] + high[1]) / 2,
                                 low0[2] - low[2]]))
    return offsets


def check_port(host: str, port: int) -> int:
    """Bind once to refuse a busy port up front (viser would silently move to the next free one);
    0 becomes a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise BadInputError("--port", f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def start(sources: list[Source], data: list[list[Any]], initial: list[int], host: str, port: int) -> Any:
    import viser

    with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own URL panel: the CLI prints one line
        server = viser.ViserServer(host=host, port=port, verbose=False)
    if server.get_port() != port:
        server.stop()
        raise BadInputError("--port", f"cannot listen on {host}:{port} (taken while starting)")
    server.scene.set_up_direction("+z")
    # viser's default lights and studio environment wash the palette out to pastel; one sun plus ambient
    # (as the trainer's own renderer shades faces) keeps the materials told apart
    server.scene.configure_default_lights(enabled=False)
    server.scene.configure_environment_map(hdri=None)
    server.scene.add_light_ambient("/ambient", intensity=1.0)
    server.scene.add_light_directional("/sun", intensity=2.0, position=(3.0, -5.0, 8.0))
    boxes = [bounds(source.kind, items) for source, items in zip(sources, data)]
    offsets = layout(boxes)
    lock = threading.Lock()
    for i, (source, items) in enumerate(zip(sources, data)):
        shown = Shown(source, items, initial[i])
        low, high = boxes[i]
        server.scene.add_frame(f"/run{i}", show_axes=False, position=tuple(offsets[i].tolist()))
        top = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[2] + 0.08 * float(np.max(high - low))]
        server.scene.add_label(f"/run{i}/label", text=source.name, position=tuple(top), anchor="bottom-center")
        _add_controls(server, shown, i, lock)
    low = np.min([lo + off for (lo, _), off in zip(boxes, offsets)], axis=0)
    high = np.max([hi + off for (_, hi), off in zip(boxes, offsets)], axis=0)
    center = (low + high) / 2
    radius = float(np.linalg.norm(high - low)) / 2 or 1.0
    server.initial_camera.look_at = tuple(center.tolist())
    server.initial_camera.position = tuple((center + radius * np.array([0.35, -1.3, 0.9])).tolist())
    return server


def _add_controls(server: Any, shown: Shown, i: int, lock: threading.Lock) -> None:
    frames = shown.source.frames
    label = shown.source.name if len(shown.source.name) <= 28 else shown.source.name[:27] + "…"
    folder = server.gui.add_folder(label)
    with folder:
        current = server.gui.add_text("showing", frames[shown.index].label, disabled=True)
        if len(frames) > 1:
            marks = None
            if len(frames) <= 8:  # more labels than that run into each other
                marks = tuple((k, f.label.removeprefix("step ").removesuffix(" (final)")) for k, f in enumerate(frames))
            slider = server.gui.add_slider("saved step", min=0, max=len(frames) - 1, step=1,
                                           initial_value=shown.index, marks=marks,
                                           hint="the saved steps of " + shown.source.name)

            @slider.on_update
            def _(_: Any) -> None:
                with lock:
                    shown.index = int(slider.value)
                    current.value = frames[shown.index].label
                    _draw(server, shown, i)
    _draw(server, shown, i)


def _draw(server: Any, shown: Shown, i: int) -> None:
    item = shown.data[shown.index]
    name = f"/run{i}/content"
    if shown.node is not None:
        shown.node.remove()
    if isinstance(item, Boxes):
        shown.node = _add_boxes(server, name, item)
    else:
        shown.node = _add_splats(server, name, item)


def _cube() -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
    # two counter-clockwise (outward-facing) triangles per face; corner index = 4x + 2y + z
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],   # -x, +x
                      [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],   # -y, +y
                      [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],  # -z, +z
                     np.uint32)
    return corners, faces


def _add_boxes(server: Any, name: str, boxes: Boxes) -> Any:
    keep = boxes.exposed
    n = int(keep.sum())
    vertices, faces = _cube()
    if n == 0:  # an empty map: nothing to draw, but the node keeps its place for the next frame
        return server.scene.add_frame(name, show_axes=False)
    return server.scene.add_batched_meshes_simple(
        name, vertices, faces,
        batched_wxyzs=np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (n, 1)),
        batched_positions=boxes.centers[keep],
        batched_scales=np.full(n, boxes.block_size, np.float32),
        # three.js takes instance colours as linear and encodes the frame as sRGB: undo that for the palette
        batched_colors=np.round((boxes.colors[keep] / 255.0) ** 2.2 * 255).astype(np.uint8),
        flat_shading=True, lod="off", cast_shadow=False, receive_shadow=False,
        wxyz=_Y_UP_TO_Z_UP)


def _add_splats(server: Any, name: str, splats: Splats) -> Any:
    return server.scene.add_gaussian_splats(name, centers=splats.centers, covariances=splats.covariances,
                                            rgbs=splats.rgbs, opacities=splats.opacities)


def serve_forever(server: Any) -> None:
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()
