"""Export a finished voxel run to the registry: `maps/trained_map_{SOURCE}_{X}/` (torch-free).

    maps/trained_map_1_2/
        map.json                  # final_map.json of the run
        training_metadata.json    # run id/path, trainer, source, prompt, steps, final metrics, config
        train.jsonl
        images/                   # the first, middle and last sample image
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import BadInputError
from ...run.export import export as export_run

FINAL_MAP = "final_map.json"
COPY_MAP = "map_optimized.json"


def export_training(training_dir: Path, source_map_id: int, registry: Path = Path("maps")) -> Path:
    """Export final_map.json, train.jsonl and the first, middle and last sample image to the registry."""
    training_dir = Path(training_dir)
    final = training_dir / FINAL_MAP
    if not final.is_file():
        raise BadInputError(final, "is missing: the run did not finish (resume it first)")
    images = sorted((training_dir / "images").glob("step_*.png"))
    picks = [images[0], images[len(images) // 2], images[-1]] if images else []
    files = {"map.json": final, **{f"images/{p.name}": p for p in picks}}
    config = json.loads((training_dir / "config.json").read_text(encoding="utf-8")) \
        if (training_dir / "config.json").is_file() else {}
    metadata = {"source_map_id": source_map_id, "prompt": config.get("prompt"),
                "guidance": _guidance(config), "dataset_id": config.get("dataset_id"),
                "blocks": len(json.loads(final.read_text(encoding="utf-8")).get("blocks", []))}
    return export_run(training_dir, registry=registry, prefix="trained_map", source=source_map_id,
                      files=files, metadata=metadata)


def _guidance(config: dict) -> str | None:
    if config.get("guidance") == "auto":
        return "sds" if config.get("prompt") else "photometric"
    return config.get("guidance")
