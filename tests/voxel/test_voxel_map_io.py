"""map.json: round trip, the bundled sample, and the one-line exit-2 error of every bad map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runforge.cli import main
from runforge.errors import BadInputError
from runforge.trainers.voxel.dataset import (
    SAMPLE_DATASET,
    SAMPLE_MAP,
    read_cameras,
    resolve_dataset,
    resolve_map,
)
from runforge.trainers.voxel.map_io import (
    DEFAULT_SIZE,
    PALETTE,
    VoxelMap,
    parse_map,
    read_map,
    write_map,
)


def test_round_trip_keeps_unknown_keys_and_sorts_blocks(tmp_path: Path) -> None:
    doc = {
        "sequence": 7,
        "editorVersion": "2.1",
        "worldConfig": {"size": [4, 3, 5], "blockSize": 0.5, "seaLevel": 1},
        "blocks": [
            {"position": [3, 0, 4], "blockType": "Water", "tint": "#00f"},
            {"position": [0, 2, 1], "blockType": "Stone"},
            {"position": [0, 0, 1], "blockType": "Leaves"},
        ],
        "metadata": {"author": "me"},
    }
    source = tmp_path / "in.json"
    source.write_text(json.dumps(doc))
    vmap = read_map(source)
    assert vmap.size == (4, 3, 5) and vmap.block_size == 0.5 and vmap.num_blocks == 3
    assert PALETTE[vmap.material[3, 0, 4]] == "Water"

    write_map(tmp_path / "out.json", vmap, {"step": 3})
    back = json.loads((tmp_path / "out.json").read_text())
    assert list(back) == list(doc)  # key order kept
    assert back["sequence"] == 7 and back["editorVersion"] == "2.1"
    assert back["worldConfig"] == {"size": [4, 3, 5], "blockSize": 0.5, "seaLevel": 1}
    assert back["metadata"] == {"author": "me", "step": 3}
    assert [b["position"] for b in back["blocks"]] == [[0, 0, 1], [0, 2, 1], [3, 0, 4]]
    assert back["blocks"][2] == {"position": [3, 0, 4], "blockType": "Water", "tint": "#00f"}
    again = read_map(tmp_path / "out.json")
    assert np.array_equal(again.occupied, vmap.occupied) and np.array_equal(again.material, vmap.material)


def test_default_size_and_empty_map() -> None:
    vmap = parse_map({"blocks": []}, "mem.json")
    assert vmap.size == DEFAULT_SIZE == (64, 48, 64) and vmap.occupied.size == 196_608
    doc = VoxelMap.empty((2, 2, 2)).to_document()
    assert doc["blocks"] == [] and doc["worldConfig"]["size"] == [2, 2, 2]


def test_bundled_sample_is_used_for_id_1_only(tmp_path: Path) -> None:
    assert resolve_map(1, tmp_path) == (SAMPLE_MAP, True)
    assert resolve_dataset(1, tmp_path) == (SAMPLE_DATASET, True)
    sample = read_map(SAMPLE_MAP)
    kinds = {PALETTE[m] for m in np.unique(sample.material[sample.occupied])}
    assert len(kinds) >= 5 and "Air" not in kinds
    cameras = read_cameras(SAMPLE_DATASET / "cameras.json")
    assert len(cameras) == 24 and all((SAMPLE_DATASET / "images" / f"{c.index:04d}.png").is_file() for c in cameras)
    (tmp_path / "maps" / "3").mkdir(parents=True)
    (tmp_path / "maps" / "3" / "map.json").write_text('{"blocks": []}')
    assert resolve_map(3, tmp_path) == (tmp_path / "maps" / "3" / "map.json", False)
    with pytest.raises(BadInputError, match=r"map ids here: 3"):
        resolve_map(2, tmp_path)


BAD_MAPS = {
    "outside": ({"worldConfig": {"size": [4, 4, 4]}, "blocks": [{"position": [0, 0, 0], "blockType": "Stone"},
                                                             {"position": [4, 0, 0], "blockType": "Stone"}]},
                r"blocks\[1\]: position \[4, 0, 0\] is outside worldConfig.size \[4, 4, 4\]"),
    "non_integer": ({"blocks": [{"position": [1.5, 0, 0], "blockType": "Stone"}]}, r"blocks\[0\]: position must be three integers"),
    "short_position": ({"blocks": [{"position": [1, 0], "blockType": "Stone"}]}, r"blocks\[0\]: position must be three integers"),
    "unknown_type": ({"blocks": [{"position": [1, 0, 0], "blockType": "Lava"}]}, r"blocks\[0\]: unknown blockType 'Lava'"),
    "air_block": ({"blocks": [{"position": [1, 0, 0], "blockType": "Air"}]}, r"blocks\[0\]: unknown blockType 'Air'"),
    "duplicate": ({"blocks": [{"position": [1, 0, 0], "blockType": "Stone"}, {"position": [2, 0, 0], "blockType": "Sand"},
                              {"position": [1, 0, 0], "blockType": "Dirt"}]}, r"blocks\[2\]: duplicate position \[1, 0, 0\]"),
    "not_object": ([1, 2, 3], r"is not a map: expected a JSON object with a 'blocks' list"),
    "no_blocks": ({"worldConfig": {}}, r"is not a map"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_bad_map_is_one_line_exit_2_and_writes_nothing(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc, message = BAD_MAPS[case]
    bad = tmp_path / f"{case}.json"
    bad.write_text(json.dumps(doc))
    code = main(["data", "render-views", "--map", str(bad), "--out", str(tmp_path / "dataset"), "--views", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(bad) in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "dataset").exists()


def test_invalid_json_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"blocks": [')
    assert main(["data", "render-views", "--map", str(broken), "--out", str(tmp_path / "d")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert main(["data", "render-views", "--map", str(tmp_path / "nope.json"), "--out", str(tmp_path / "d")]) == 2
    assert "no such map file" in capsys.readouterr().err
