"""COLMAP scenes: `DATA_DIR/images/` + `DATA_DIR/sparse/0/` (binary or text), read with pycolmap.

    parser = Parser("data/garden", factor=4, normalize=True, test_every=8)
    parser.camtoworlds[i], parser.Ks[i], parser.images[i]   # [4, 4], [3, 3], HxWx3 uint8 (undistorted)
    parser.points, parser.points_rgb, parser.scene_scale
    parser.train_indices, parser.val_indices                 # every `test_every`-th image is validation

Distorted camera models are undistorted on load to a pinhole camera with the
same focal lengths and principal point (the distortion is evaluated by
pycolmap's own camera model, so every perspective model it knows works).
Anything broken or missing raises BadInputError naming the file.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np

from ...errors import BadInputError

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
UNDISTORTED_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
MODEL_FILES = ("cameras", "images", "points3D")
RIG_FILES = ("rigs", "frames")
"""COLMAP 4 writes these beside the three legacy files; pycolmap reads them when present."""
MAX_IMAGE_PIXELS = 100_000_000
"""Per photo (a 100-megapixel camera): every image is held in memory, decoded, for the whole run."""


def find_sparse_dir(data_dir: Path) -> Path:
    for candidate in (data_dir / "sparse" / "0", data_dir / "sparse"):
        if any((candidate / f"cameras{ext}").exists() for ext in (".bin", ".txt")):
            return candidate
    if not data_dir.is_dir():
        raise BadInputError(data_dir, "no such scene directory")
    raise BadInputError(data_dir / "sparse" / "0", "no COLMAP model here (expected cameras.bin/.txt, images.bin/.txt, "
                                                   "points3D.bin/.txt)")


def read_model(sparse_dir: Path) -> "pycolmap.Reconstruction":  # type: ignore[name-defined]  # noqa: F821
    import pycolmap

    for name in MODEL_FILES:
        if not (sparse_dir / f"{name}.bin").exists() and not (sparse_dir / f"{name}.txt").exists():
            raise BadInputError(sparse_dir / f"{name}.bin", f"missing (the COLMAP model in {sparse_dir} needs it)")
    culprit = first_broken_binary(sparse_dir)
    if culprit is not None:
        raise BadInputError(*culprit)
    try:
        return pycolmap.Reconstruction(str(sparse_dir))
    except Exception as exc:  # pycolmap's failed checks come as ValueError, RuntimeError, IndexError, ...
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInputError(_file_named_by(sparse_dir, text), f"unreadable COLMAP model: {text}") from None


def _file_named_by(sparse_dir: Path, message: str) -> Path:
    """pycolmap's messages say "Camera model ...", "Image ...", "Point3D ...", "Rig ...": map them to the file."""
    lowered = message.lower()
    for name, word in (("cameras", "camera"), ("points3D", "point"), ("images", "image"), ("frames", "frame"),
                       ("rigs", "rig")):
        if name.lower() in lowered or word in lowered:
            for ext in (".bin", ".txt"):
                if (sparse_dir / f"{name}{ext}").exists():
                    return sparse_dir / f"{name}{ext}"
    return sparse_dir


@functools.cache
def camera_model_params() -> dict[int, int]:
    """Parameters per camera model id, from pycolmap itself (the binary cameras file does not store the count)."""
    import pycolmap

    return {int(model): len(pycolmap.Camera.create_from_model_id(1, model, 1.0, 1, 1).params)
            for model in pycolmap.CameraModelId.__members__.values() if int(model) >= 0}


def first_broken_binary(sparse_dir: Path) -> tuple[Path, str] | None:
    """Walk the record layout of each binary file (COLMAP's format) so the error names the broken one.

    pycolmap trusts the counts in these files: a damaged one can make it allocate without end or loop
    for hours, so every record must fit in the file before pycolmap sees it.
    """
    for name in MODEL_FILES + RIG_FILES:
        path = sparse_dir / f"{name}.bin"
        if not path.is_file():
            continue
        problem = binary_layout_problem(name, path.read_bytes())
        if problem:
            return path, problem
    return None


def binary_layout_problem(name: str, data: bytes) -> str | None:
    """Why `data` is not a COLMAP `{name}.bin` file (None: every record fits, with nothing left over)."""
    try:
        pos, problem = _walk(name, data)
    except struct.error:
        return "truncated or not a COLMAP binary file"
    if problem:
        return problem
    if pos != len(data):
        return f"{len(data) - pos} unexpected trailing bytes (not a COLMAP binary file?)"
    return None


def _walk(name: str, data: bytes) -> tuple[int, str | None]:
    (count,) = struct.unpack_from("<Q", data, 0)
    pos = 8
    if count > len(data):
        return pos, f"claims {count} records in {len(data)} bytes"
    for _ in range(count):
        if name == "cameras":
            _, model, _, _ = struct.unpack_from("<iiQQ", data, pos)
            if model not in camera_model_params():
                return pos, f"unknown camera model id {model}"
            pos += 24 + 8 * camera_model_params()[model]
        elif name == "images":
            pos += 4 + 8 * 7 + 4
            end = data.find(b"\0", pos)
            if end < 0:
                raise struct.error("the image name never ends")
            pos = end + 1
            (n2d,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + 24 * n2d
        elif name == "points3D":
            pos += 8 + 24 + 3 + 8
            (track,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + 8 * track
        elif name == "rigs":
            (_, sensors) = struct.unpack_from("<II", data, pos)
            pos += 8 + (8 if sensors else 0)
            for _ in range(max(sensors - 1, 0)):  # unpack_from past the end stops a forged count at once
                (has_pose,) = struct.unpack_from("<B", data, pos + 8)
                pos += 9 + (56 if has_pose else 0)
        else:  # frames
            pos += 4 + 4 + 8 * 7
            (data_ids,) = struct.unpack_from("<I", data, pos)
            pos += 4 + 16 * data_ids
        if pos > len(data):
            raise struct.error("truncated")
    return pos, None


def check_model(data_dir: Path) -> tuple[Path, "pycolmap.Reconstruction"]:  # type: ignore[name-defined]  # noqa: F821
    """The sparse folder and its model, refused (naming the file) when it cannot be trained on: no registered
    image, an unsupported or degenerate camera, a pose or point that is not finite, no images/ folder."""
    sparse_dir = find_sparse_dir(data_dir)
    rec = read_model(sparse_dir)

    def model_file(name: str) -> Path | None:
        return next((sparse_dir / f"{name}{e}" for e in (".bin", ".txt") if (sparse_dir / f"{name}{e}").exists()), None)

    images_file = model_file("images") or sparse_dir
    cameras_file = model_file("cameras") or sparse_dir
    poses_file = model_file("frames") or images_file  # COLMAP 4 keeps the poses in its frames, not its images

    if rec.num_reg_images() == 0:
        raise BadInputError(images_file, "the model has no registered images")
    for camera_id, camera in rec.cameras.items():
        if camera.model_name not in PINHOLE_MODELS + UNDISTORTED_MODELS:
            raise BadInputError(cameras_file, f"camera {camera_id}: model {camera.model_name} is not supported "
                                              f"(use one of {', '.join(PINHOLE_MODELS + UNDISTORTED_MODELS)})")
        fx, fy, _, _ = pinhole_params(camera)
        if camera.width < 1 or camera.height < 1 or not np.isfinite(camera.params).all() or not min(fx, fy) > 0:
            raise BadInputError(cameras_file, f"camera {camera_id}: needs a positive size and focal length "
                                              "and finite parameters")
    for image_id in rec.reg_image_ids():
        if not np.isfinite(rec.images[image_id].cam_from_world().matrix()).all():
            raise BadInputError(poses_file, f"image {image_id}: the pose is not finite")
    if rec.num_points3D() and not np.isfinite(np.array([p.xyz for p in rec.points3D.values()])).all():
        raise BadInputError(model_file("points3D") or sparse_dir, "a 3D point is not finite")
    image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise BadInputError(image_dir, "missing (the scene's images belong here)")
    return sparse_dir, rec


def image_files(data_dir: Path, factor: int,
                rec: "pycolmap.Reconstruction") -> tuple[list[tuple[int, Path]], int]:  # type: ignore[name-defined]  # noqa: F821
    """(image id, file) of the registered images in name order, and the factor they still need downsampling by:
    `images_{factor}/` when it exists (1), else `images/` (factor)."""
    scaled_dir = data_dir / f"images_{factor}"
    folder, left = (scaled_dir, 1) if factor > 1 and scaled_dir.is_dir() else (data_dir / "images", factor)
    ids = sorted(rec.reg_image_ids(), key=lambda i: rec.images[i].name)
    return [(i, folder / rec.images[i].name) for i in ids], left


def split(count: int, test_every: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices as gsplat's Dataset: images 0, test_every, 2*test_every, ... are held out."""
    val = [i for i in range(count) if test_every > 0 and i % test_every == 0]
    return [i for i in range(count) if test_every <= 0 or i % test_every != 0], val


def check_scene(data_dir: Path,
                factor: int = 1) -> tuple["pycolmap.Reconstruction", set[tuple[int, int]]]:  # type: ignore[name-defined]  # noqa: F821
    """Fail early (before a run directory exists) on a broken model or a missing, broken or oversized image.
    Returns the model and the (height, width) sizes the images load at."""
    _, rec = check_model(data_dir)
    sizes = set()
    files, downsample = image_files(data_dir, factor, rec)
    for _, path in files:
        if not path.is_file():
            raise BadInputError(path, "image listed in the COLMAP model is missing")
        sizes.add(load_image(path, downsample).shape[:2])
    return rec, sizes


def undistort_map(camera: "pycolmap.Camera") -> tuple[np.ndarray, np.ndarray]:  # type: ignore[name-defined]  # noqa: F821
    """For each pixel of the pinhole output, where to sample the distorted image (pixel-index coordinates)."""
    fx, fy, cx, cy = pinhole_params(camera)
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    distorted = np.asarray(camera.img_from_cam(rays, check_cheirality=False)).reshape(camera.height, camera.width, 2)
    return distorted[..., 0] - 0.5, distorted[..., 1] - 0.5


def pinhole_params(camera: "pycolmap.Camera") -> tuple[float, float, float, float]:  # type: ignore[name-defined]  # noqa: F821
    return (float(camera.focal_length_x), float(camera.focal_length_y), float(camera.principal_point_x),
            float(camera.principal_point_y))


def remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    channels = [map_coordinates(image[..., c].astype(np.float32), [map_y, map_x], order=1, mode="nearest")
                for c in range(image.shape[-1])]
    return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


def load_image(path: Path, downsample: int = 1) -> np.ndarray:
    """HxWx3 uint8, downsampled by `downsample` (bicubic)."""
    from ..common import open_image

    pixels = np.asarray(open_image(path, MAX_IMAGE_PIXELS, "splat photos, 100 megapixels", "RGB"))
    if downsample > 1:
        if min(pixels.shape[:2]) < downsample:
            raise BadInputError(path, f"is {pixels.shape[1]}x{pixels.shape[0]} pixels, too small for --data_factor "
                                      f"{downsample}")
        pixels = _downsample(pixels, downsample)
    return pixels


def similarity_from_cameras(c2w: np.ndarray) -> np.ndarray:
    """4x4 similarity: average camera up -> +z, centre at the cameras' common focus, median distance 1."""
    t, R = c2w[:, :3, 3], c2w[:, :3, :3]
    up = -R[:, :, 1].mean(0)  # COLMAP cameras look down +z with y pointing down the image
    up /= np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(up @ z)
    if c < -1 + 1e-8:
        rot = np.diag([1.0, -1.0, -1.0])
    else:
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        rot = np.eye(3) + vx + vx @ vx / (1 + c)
    R_al = rot @ R
    t_al = t @ rot.T
    # The point nearest to every optical axis (least squares), as gsplat's focus point.
    dirs = R_al[:, :, 2]
    A = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    focus = np.linalg.lstsq(A.sum(0), (A @ t_al[:, :, None]).sum(0), rcond=None)[0][:, 0]
    if not np.all(np.isfinite(focus)):
        focus = t_al.mean(0)
    scale = 1.0 / max(float(np.median(np.linalg.norm(t_al - focus, axis=-1))), 1e-8)
    T = np.eye(4)
    T[:3, :3] = scale * rot
    T[:3, 3] = -scale * focus
    return T


def transform_cameras(T: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    out = np.einsum("ij,njk->nik", T, c2w)
    scale = np.linalg.norm(T[0, :3])
    out[:, :3, :3] /= scale  # keep rotations orthonormal
    return out


class Parser:
    """A COLMAP scene on disk, loaded into memory (images undistorted and downsampled)."""

    def __init__(self, data_dir: str | Path, factor: int = 1, normalize: bool = False, test_every: int = 8) -> None:
        import pycolmap

        self.data_dir = Path(data_dir)
        self.factor = factor
        self.sparse_dir, rec = check_model(self.data_dir)

        undistorters: dict[int, tuple[pycolmap.Camera, tuple[np.ndarray, np.ndarray] | None]] = {}
        names, c2ws, Ks, images, camera_ids = [], [], [], [], []
        files, downsample = image_files(self.data_dir, factor, rec)
        for image_id, path in files:
            info = rec.images[image_id]
            camera = rec.cameras[info.camera_id]
            model = camera.model_name
            w2c = np.eye(4)
            w2c[:3, :4] = info.cam_from_world().matrix()
            pixels = load_image(path, downsample)
            if info.camera_id not in undistorters:
                cam = pycolmap.Camera(camera.todict())
                cam.rescale(pixels.shape[1], pixels.shape[0])
                undistorters[info.camera_id] = (cam, undistort_map(cam) if model in UNDISTORTED_MODELS else None)
            cam, maps = undistorters[info.camera_id]
            if maps is not None:
                pixels = remap(pixels, *maps)
            fx, fy, cx, cy = pinhole_params(cam)
            names.append(info.name)
            c2ws.append(np.linalg.inv(w2c))
            Ks.append(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]))
            images.append(pixels)
            camera_ids.append(info.camera_id)

        points = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
        colors = np.array([p.color for p in rec.points3D.values()], dtype=np.uint8).reshape(-1, 3)
        camtoworlds = np.stack(c2ws)
        self.transform = np.eye(4)
        if normalize:
            T1 = similarity_from_cameras(camtoworlds)
            camtoworlds = transform_cameras(T1, camtoworlds)
            points = points @ T1[:3, :3].T + T1[:3, 3]
            T2 = _align_principal_axes(points, camtoworlds)
            camtoworlds = transform_cameras(T2, camtoworlds)
            points = points @ T2[:3, :3].T + T2[:3, 3]
            self.transform = T2 @ T1

        self.image_names: list[str] = names
        self.camera_ids: list[int] = camera_ids
        self.camtoworlds: np.ndarray = camtoworlds.astype(np.float32)  # [N, 4, 4]
        self.Ks: np.ndarray = np.stack(Ks).astype(np.float32)  # [N, 3, 3]
        self.images: list[np.ndarray] = images  # HxWx3 uint8, undistorted
        self.points: np.ndarray = points.astype(np.float32)  # [M, 3]
        self.points_rgb: np.ndarray = colors  # [M, 3] uint8
        centre = camtoworlds[:, :3, 3].mean(0)
        self.scene_scale = float(np.max(np.linalg.norm(camtoworlds[:, :3, 3] - centre, axis=-1)))
        self.train_indices, self.val_indices = split(len(names), test_every)

    def __len__(self) -> int:
        return len(self.image_names)


def _downsample(pixels: np.ndarray, factor: int) -> np.ndarray:
    from PIL import Image

    h, w = pixels.shape[0] // factor, pixels.shape[1] // factor
    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.BICUBIC))


def _align_principal_axes(points: np.ndarray, camtoworlds: np.ndarray) -> np.ndarray:
    """Rotate the point cloud's principal axes onto x, y, z (smallest spread on z), cameras kept above."""
    T = np.eye(4)
    if len(points) < 3:
        return T
    centre = np.median(points, axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    rot = vt.copy()  # rows: largest to smallest spread
    if np.linalg.det(rot) < 0:
        rot[2] *= -1
    heights = (camtoworlds[:, :3, 3] - centre) @ rot[2]
    if np.mean(heights) < 0:
        rot[1:] *= -1  # a proper rotation that flips z
    T[:3, :3] = rot
    T[:3, 3] = -rot @ centre
    return T
