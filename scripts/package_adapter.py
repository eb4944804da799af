"""Package a trained adapter for shipping: its tensors and metadata, with the segment length it runs at.

The segment length in an adapter's metadata is the product's default reading segment. Training may use shorter
segments (cheaper on a CPU) than the product reads with; this records the choice explicitly and keeps the
training metadata, adding `packaged` (source file, trained and shipped segment lengths).

    python scripts/package_adapter.py runs/cpu2/adapter.safetensors \
        infinicli/adapters/smollm2-135m.safetensors --segment-len 1024
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from infinicli.loading import read_adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--segment-len", type=int, required=True)
    a = ap.parse_args()
    tensors, meta = read_adapter(a.src)
    icfg = meta["infini_config"]
    packaged = {"from": str(a.src), "trained_segment_len": icfg["segment_len"], "segment_len": a.segment_len}
    icfg["segment_len"] = a.segment_len
    out = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    out["packaged"] = json.dumps(packaged)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(a.dst), metadata=out)
    trained = packaged["trained_segment_len"]
    print(f"{a.dst}: {len(tensors)} tensors, segment_len {a.segment_len} (trained at {trained})")


if __name__ == "__main__":
    main()
