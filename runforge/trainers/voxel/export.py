"""Export a finished voxel run to the registry: `maps/trained_map_{SOURCE}_{X}/` (torch-free).

    maps/trained_map_1_2/
        map.json                  # final_map.json of the run
        training_metadata.json    # run id/path, trainer, source, prompt, steps, final metrics, config
        train.jsonl
        images/                   # the first, middle and last sample image
"""

from __future__ import annotations

from pathlib import Path

from ...errors import BadInputError
from ...run.export import _load_registry as load_registry
from ...run.export import export as export_run
from ...run.files import read_json_object
from ...run.layout import CONFIG_FILE, IMAGES_DIR, REGISTRY_FILE
from ..common import check_output
from .map_io import read_map

FINAL_MAP = "final_map.json"
COPY_MAP = "map_optimized.json"


def check_registry(registry: Path, flag: str) -> None:
    """The registry folder can be made or written, and its registry.json (if any) is a list of exports."""
    check_output(registry, (REGISTRY_FILE,), flag)
    load_registry(Path(registry))


def export_training(training_dir: Path, source_map_id: int, registry: Path = Path("maps")) -> Path:
    """Export final_map.json, train.jsonl and the first, middle and last sample image to the registry."""
    training_dir = Path(training_dir)
    if not training_dir.is_dir():
        raise BadInputError(training_dir, "is not a training run folder")
    final = training_dir / FINAL_MAP
    if not final.is_file():
        raise BadInputError(final, "is missing: the run did not finish (resume it first)")
    blocks = read_map(final).num_blocks
    config = read_json_object(training_dir / CONFIG_FILE, "config file", BadInputError) \
        if (training_dir / CONFIG_FILE).exists() else {}
    check_registry(registry, "--registry")
    images = sorted((training_dir / IMAGES_DIR).glob("step_*.png"))
    picks = [images[0], images[len(images) // 2], images[-1]] if images else []
    files = {"map.json": final, **{f"images/{p.name}": p for p in picks}}
    metadata = {"source_map_id": source_map_id, "prompt": config.get("prompt"),
                "guidance": _guidance(config), "dataset_id": config.get("dataset_id"), "blocks": blocks}
    return export_run(training_dir, registry=registry, prefix="trained_map", source=source_map_id,
                      files=files, metadata=metadata)


def _guidance(config: dict) -> str | None:
    if config.get("guidance") == "auto":
        return "sds" if config.get("prompt") else "photometric"
    return config.get("guidance")
