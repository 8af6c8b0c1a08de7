"""Per-logged-step overhead of each integration against the TensorBoard path it replaces.

Each `bench/overhead_*.py` module measures one pair (same model, same steps, one process) and returns
rows of (what, runforge seconds per logged step, peer name, peer seconds per logged step). The bar:
runforge at least 10x cheaper per logged step than the TensorBoard paths.

    .venv/bin/python bench/integrations_overhead.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BAR = 10.0
PAIRS = ("overhead_summarywriter", "overhead_lightning", "overhead_huggingface")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    failed = False
    print(f"{'what':<44} {'runforge us/step':>17} {'peer':<28} {'peer us/step':>13} {'ratio':>7}")
    for name in PAIRS:
        for what, ours, peer, theirs in importlib.import_module(name).measure():
            ratio = theirs / ours if ours > 0 else float("inf")
            tensorboard_peer = "tensorboard" in peer.lower()
            failed |= tensorboard_peer and ratio < BAR
            print(f"{what:<44} {ours * 1e6:>17.1f} {peer:<28} {theirs * 1e6:>13.1f} {ratio:>6.1f}x"
                  + ("" if not tensorboard_peer or ratio >= BAR else f"  BELOW the {BAR:.0f}x bar"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
