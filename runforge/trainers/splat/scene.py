"""A small synthetic scene, ray-traced from known poses and written as a real COLMAP model.

    write_synthetic_scene("data/synthetic", n_images=40, width=128, height=96)

    OUT/images/img_000.png ...               # renders (2x2 supersampled), black sky
    OUT/sparse/0/cameras.bin images.bin points3D.bin rigs.bin frames.bin   # or .txt with text=True

The scene: a textured ground square, two shaded spheres and a box, lit by one
directional light (Lambert + ambient, so colour is view-independent). Cameras
circle it at varying heights, looking at its centre. The sparse cloud samples
surface points seen by the cameras, with tracks to every image that sees them
(depth-tested), and keypoints where they project, so it looks like SfM output.
Distorted camera models (SIMPLE_RADIAL, OPENCV) are rendered through the
distortion, so a loader has to undistort them to recover the scene.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ...errors import BadInputError
from ...run.naming import make_dir
from ..common import check_output

CAMERA_PARAMS = {  # distortion beyond (f, cx, cy) per model; focal/principal point are filled in
    "SIMPLE_PINHOLE": [],
    "PINHOLE": [],
    "SIMPLE_RADIAL": [0.25],
    "OPENCV": [0.25, 0.05, 0.002, -0.001],
}
MAX_IMAGES = 1000
MAX_SIDE = 4096
MAX_PIXELS = 1024 * 1024
MAX_POINTS = 100_000
GROUND_HALF = 2.5
SPHERES = [((0.0, 0.0, 0.6), 0.6), ((1.1, -0.7, 0.35), 0.35)]
BOX = ((-1.0, 0.8, 0.4), 0.4)  # centre, half size
LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """COLMAP camera-to-world (x right, y down, z forward), world z up."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], 1)
    c2w[:3, 3] = eye
    return c2w


def camera_poses(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    poses = []
    for i in range(n):
        angle = 2 * np.pi * i / n + rng.uniform(-0.05, 0.05)
        radius = 4.0 + rng.uniform(-0.3, 0.3)
        height = 1.9 + 0.6 * np.sin(3 * angle)
        eye = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
        poses.append(look_at(eye, np.array([0.0, 0.0, 0.35]) + rng.normal(0, 0.05, 3)))
    return poses


def _albedo_ground(p: np.ndarray) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    check = 0.5 + 0.5 * np.sin(np.pi * 1.2 * x) * np.sin(np.pi * 1.2 * y)
    ring = 0.5 + 0.5 * np.cos(2.5 * np.hypot(x, y))
    a, b = np.array([0.85, 0.75, 0.55]), np.array([0.25, 0.45, 0.3])
    return (check[..., None] * a + (1 - check[..., None]) * b) * (0.75 + 0.25 * ring[..., None])


def _albedo_sphere(p: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    d = p - centre
    lat = np.arctan2(d[..., 2], np.hypot(d[..., 0], d[..., 1]))
    lon = np.arctan2(d[..., 1], d[..., 0])
    stripes = 0.5 + 0.5 * np.sin(5 * lat + (2 if k else 0) * lon)
    a = np.array([[0.9, 0.3, 0.2], [0.2, 0.4, 0.9]])[k]
    b = np.array([[0.95, 0.85, 0.3], [0.9, 0.9, 0.9]])[k]
    return stripes[..., None] * a + (1 - stripes[..., None]) * b


def _albedo_box(p: np.ndarray, normal: np.ndarray) -> np.ndarray:
    u = p[..., 0] + p[..., 1] + p[..., 2]
    band = 0.5 + 0.5 * np.sin(4 * u)
    face = 0.6 + 0.4 * np.abs(normal) @ np.array([0.2, 0.6, 1.0])
    return (band[..., None] * np.array([0.3, 0.75, 0.65]) + (1 - band[..., None]) * np.array([0.55, 0.25, 0.6])) \
        * face[..., None]


def trace(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour [R, 3] (0 for the sky) and hit distance [R] (inf for the sky) of unit rays."""
    n = dirs.shape[0]
    best = np.full(n, np.inf)
    kind = np.full(n, -1)
    normals = np.zeros((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origins[:, 2] / dirs[:, 2]
        hit = origins + t[:, None] * dirs
        ok = (t > 1e-6) & (np.abs(hit[:, 0]) <= GROUND_HALF) & (np.abs(hit[:, 1]) <= GROUND_HALF)
        closer = ok & (t < best)
        best[closer], kind[closer], normals[closer] = t[closer], 0, [0.0, 0.0, 1.0]
        for k, (centre, radius) in enumerate(SPHERES):
            oc = origins - np.array(centre)
            b = np.sum(oc * dirs, 1)
            disc = b * b - (np.sum(oc * oc, 1) - radius * radius)
            t = -b - np.sqrt(np.maximum(disc, 0))
            closer = (disc > 0) & (t > 1e-6) & (t < best)
            best[closer], kind[closer] = t[closer], 1 + k
            normals[closer] = (origins[closer] + t[closer, None] * dirs[closer] - centre) / radius
        centre, half = np.array(BOX[0]), BOX[1]
        inv = 1.0 / dirs
        t0, t1 = (centre - half - origins) * inv, (centre + half - origins) * inv
        tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
        t_near, t_far = tmin.max(1), tmax.min(1)
        closer = (t_near <= t_far) & (t_near > 1e-6) & (t_near < best)
        best[closer], kind[closer] = t_near[closer], 3
        axis = tmin[closer].argmax(1)
        face = np.zeros((int(closer.sum()), 3))
        face[np.arange(len(axis)), axis] = -np.sign(dirs[closer][np.arange(len(axis)), axis])
        normals[closer] = face
    points = origins + np.where(np.isfinite(best), best, 0)[:, None] * dirs
    albedo = np.zeros((n, 3))
    albedo[kind == 0] = _albedo_ground(points[kind == 0])
    for k, (centre, _) in enumerate(SPHERES):
        albedo[kind == 1 + k] = _albedo_sphere(points[kind == 1 + k], np.array(centre), k)
    albedo[kind == 3] = _albedo_box(points[kind == 3], normals[kind == 3])
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT, 0, 1)
    return np.clip(albedo * shade[:, None], 0, 1), best


def render(c2w: np.ndarray, camera: "pycolmap.Camera", supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[name-defined]  # noqa: F821
    """HxWx3 float image (box-filtered supersamples) and HxW camera-z depth at pixel centres (inf: sky)."""
    w, h, s = camera.width, camera.height, supersample
    offsets = (np.arange(s) + 0.5) / s
    u = (np.arange(w)[:, None] + offsets[None]).reshape(-1)
    v = (np.arange(h)[:, None] + offsets[None]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), -1).reshape(-1, 2)
    pixels = np.concatenate([np.stack([uu, vv], -1).reshape(-1, 2), centres])
    normalized = np.asarray(camera.cam_from_img(pixels))
    d_cam = np.concatenate([normalized, np.ones((len(normalized), 1))], 1)
    d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
    dirs = d_cam @ c2w[:3, :3].T
    color, dist = trace(np.broadcast_to(c2w[:3, 3], dirs.shape).copy(), dirs)
    n_sub = uu.size
    image = color[:n_sub].reshape(h, s, w, s, 3).mean((1, 3))
    depth = (dist[n_sub:] * d_cam[n_sub:, 2]).reshape(h, w)
    return image, depth


def write_synthetic_scene(out: str | Path, n_images: int = 40, width: int = 128, height: int = 96,
                          n_points: int = 3000, camera_model: str = "PINHOLE", text: bool = False, seed: int = 0,
                          overwrite: bool = False) -> Path:
    """Render the scene and write `out/images/` and `out/sparse/0/` (atomically: a temp dir renamed into place)."""
    import pycolmap
    from PIL import Image

    out = Path(out)
    if camera_model not in CAMERA_PARAMS:
        raise BadInputError(None, f"--camera_model {camera_model}: choose from {', '.join(CAMERA_PARAMS)}")
    for flag, value, low, high in (("--images", n_images, 2, MAX_IMAGES), ("--width", width, 8, MAX_SIDE),
                                   ("--height", height, 8, MAX_SIDE), ("--points", n_points, 1, MAX_POINTS),
                                   ("--seed", seed, 0, 10**9)):
        if not low <= value <= high:
            raise BadInputError(None, f"{flag}: must be from {low} to {high}, got {value}")
    if width * height > MAX_PIXELS:
        raise BadInputError(None, f"--width {width} --height {height}: {width * height:,} pixels per image, more than "
                                  f"the limit of {MAX_PIXELS:,} (1024x1024; each is ray-traced 2x2 supersampled)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BadInputError(out, "is not a folder; a scene is written as a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BadInputError(out, "exists and is not empty; choose another OUT or pass --overwrite")
        if {p.name for p in out.iterdir()} - {"images", "sparse"}:  # --overwrite deletes the folder
            raise BadInputError(out, "--overwrite replaces only a scene folder (images/ and sparse/), and this one "
                                     "holds other files")
    check_output(out.parent, flag="OUT")
    rng = np.random.default_rng(seed)
    focal = 0.5 * width / np.tan(np.radians(25))
    camera = pycolmap.Camera.create_from_model_name(1, camera_model, focal, width, height)
    camera.params = list(camera.params[: len(camera.params) - len(CAMERA_PARAMS[camera_model])]) + CAMERA_PARAMS[camera_model]
    poses = camera_poses(n_images, rng)
    renders = [render(c2w, camera) for c2w in poses]

    # Sparse points: surface hits of random pixel rays, then depth-tested tracks into every image.
    which = rng.integers(n_images, size=n_points * 2)
    norm = np.asarray(camera.cam_from_img(rng.uniform([0, 0], [width, height], size=(n_points * 2, 2))))
    rays = np.concatenate([norm, np.ones((len(norm), 1))], 1)
    rotations = np.stack(poses)[which, :3, :3]
    dirs = np.einsum("nij,nj->ni", rotations, rays)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.stack(poses)[which, :3, 3]
    colors, dist = trace(origins, dirs)
    hit = np.isfinite(dist)
    xyz = (origins + dist[:, None] * dirs)[hit][:n_points]
    colors = colors[hit][:n_points]
    xyz = xyz + rng.normal(0, 0.003, xyz.shape)  # SfM points are never exactly on the surface
    keypoints: list[list[np.ndarray]] = [[] for _ in poses]
    tracks: list[list[tuple[int, int]]] = [[] for _ in xyz]
    for i, (c2w, (_, depth)) in enumerate(zip(poses, renders)):
        w2c = np.linalg.inv(c2w)
        cam_pts = xyz @ w2c[:3, :3].T + w2c[:3, 3]
        front = cam_pts[:, 2] > 1e-3
        uv = np.full((len(xyz), 2), -1.0)
        uv[front] = np.asarray(camera.img_from_cam(cam_pts[front]))
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        seen = np.zeros(len(xyz), bool)
        seen[inside] = np.abs(depth[row[inside], col[inside]] - cam_pts[inside, 2]) < 0.03 * cam_pts[inside, 2]
        for p in np.nonzero(seen)[0]:
            tracks[p].append((i + 1, len(keypoints[i])))
            keypoints[i].append(uv[p])

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(camera)
    for i, c2w in enumerate(poses):
        w2c = np.linalg.inv(c2w)
        kp = np.array(keypoints[i], dtype=np.float64).reshape(-1, 2)
        image = pycolmap.Image(name=f"img_{i:03d}.png", keypoints=kp, camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3, :4]))
    for p, track in enumerate(tracks):
        if len(track) >= 2:
            elements = [pycolmap.TrackElement(image_id, idx) for image_id, idx in track]
            rec.add_point3D(xyz[p], pycolmap.Track(elements), np.rint(colors[p] * 255).astype(np.uint8))

    make_dir(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        for i, (image, _) in enumerate(renders):
            Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(tmp / "images" / f"img_{i:03d}.png")
        sparse = tmp / "sparse" / "0"
        sparse.mkdir(parents=True)
        if text:
            rec.write_text(str(sparse))
        else:
            rec.write_binary(str(sparse))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
