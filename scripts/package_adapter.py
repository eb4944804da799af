"""Package a trained adapter for shipping: its tensors and metadata, with the segment length it runs at.

The segment length in an adapter's metadata is the product's default reading segment. Training may use shorter
segments (cheaper on a CPU) than the product reads with; this records the choice explicitly and keeps the
training metadata, adding `packaged` (source file, trained and shipped segment lengths).

    python scripts/package_adapter.py runs/cpu2/adapter.safetensors \
        infinicli/adapters/smollm2-135m.safetensors --segment-len 1024

`--memory-layers 22,23` closes the gate of every other layer (β = memory.CLOSED_GATE, sigmoid(β) = 0): those
layers then attend locally only, as with an empty memory, while the listed layers keep their trained gates.
A structural choice, recorded in the metadata: `scripts/memory_probe.py` shows which layers' reads select
anything, `scripts/gate_probe.py` what closing the others does to perplexity. `--write-chunk 256` makes the
delta-rule write of each segment go in chunks of 256 tokens (model.InfiniConfig.write_chunk), the write size
an adapter trained on segments of 256 saw, while reading still uses the longer segments. `--sharpen 22,23=2`
multiplies the memory queries and keys of the listed layers by 2 before σ (model.InfiniConfig.mem_scale: the
adapter gets a sharpness s = ln 2 per KV head there, 0 elsewhere): `scripts/sharpness_probe.py` measures
what a sharper read does at each length. `--average-with OTHER --weight W` ships the interpolation
W·SRC + (1−W)·OTHER of two adapters of one lineage (a checkpoint average, as in model soups): the LoRA updates
are mixed exactly (the low-rank factors are stacked, so the rank is the sum of both ranks and the merged
weights are W·B₁A₁ + (1−W)·B₂A₂), every other tensor (gates, sharpness) linearly; SRC's training metadata
stays, `packaged` names OTHER and W. `--average-layers 23` mixes only those layers' tensors (the rest stay
SRC's): with `--weight 0` the listed layers are OTHER's, a swap that tells what one layer's training did.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from infinicli.bench.common import parse_ints
from infinicli.errors import ModelError, UsageError
from infinicli.loading import average_adapters, layer_of, read_adapter, save_adapter
from infinicli.memory import CLOSED_GATE
from infinicli.model import parse_sharpen


def sharpen(tensors: dict[str, torch.Tensor], icfg: dict, shape: str, spec: str) -> dict[str, float]:
    """Set the memory sharpness s = ln A of the layers in spec ("22,23=2"); other layers keep theirs (0 when
    the adapter had none). Returns {layer: A} as recorded in the metadata."""
    n_layers = sum(k.endswith(".self_attn.gate") for k in tensors)
    try:
        chosen, factor = parse_sharpen(spec, n_layers)
    except ValueError as e:
        raise UsageError(f"--sharpen {e}") from None
    n_kv = int(shape.split("-KV")[1].split("-")[0])  # "L30-H9-KV3-d64-C576"
    for i in range(n_layers):
        key = f"model.layers.{i}.self_attn.mem_scale"
        tensors.setdefault(key, torch.zeros(n_kv))
        if i in chosen:
            tensors[key] = torch.full((n_kv,), math.log(factor))
    icfg["mem_scale"] = True
    return {str(i): factor for i in chosen}


def average(
    tensors: dict[str, torch.Tensor],
    icfg: dict,
    other: Path,
    weight: float,
    layers: set[int] | None = None,
) -> dict[str, torch.Tensor]:
    """weight·tensors + (1 − weight)·other's (loading.average_adapters); icfg gets the summed LoRA rank."""
    if not 0.0 <= weight <= 1.0:
        raise UsageError(f"--weight {weight}: use a number from 0 to 1")
    theirs, their_meta = read_adapter(other)
    try:
        return average_adapters(tensors, icfg, theirs, their_meta.get("infini_config", {}), weight, layers)
    except ModelError as e:
        raise UsageError(f"--average-with {other}: {e}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--segment-len", type=int, required=True)
    ap.add_argument("--memory-layers", default="all", help="layers whose gates stay open (default: all)")
    ap.add_argument(
        "--write-chunk", type=int, default=None, help="tokens per delta-rule write (0: the whole segment)"
    )
    ap.add_argument("--sharpen", default=None, help="LAYERS=A: memory queries and keys of LAYERS times A")
    ap.add_argument("--average-with", type=Path, default=None, help="another adapter of the same lineage")
    ap.add_argument("--weight", type=float, default=0.5, help="SRC's share of the average (default 0.5)")
    ap.add_argument("--average-layers", default="all", help="the layers the average mixes (default: all)")
    a = ap.parse_args()
    tensors, meta = read_adapter(a.src)
    icfg = meta["infini_config"]
    before = meta.get("packaged", {})  # packaging a packaged adapter keeps its training facts
    trained = before.get("trained_segment_len", icfg["segment_len"])
    packaged = {"from": str(a.src), "trained_segment_len": trained, "segment_len": a.segment_len}
    if a.average_with is not None:
        n_layers = 1 + max(layer_of(k) for k in tensors)
        mixed = None
        if a.average_layers != "all":
            mixed = set(parse_ints(a.average_layers, "--average-layers", 0, n_layers - 1))
        tensors = average(tensors, icfg, a.average_with, a.weight, mixed)
        packaged["averaged_with"] = {"adapter": str(a.average_with), "weight_of_from": a.weight}
        if mixed is not None:
            packaged["averaged_with"]["layers"] = sorted(mixed)
    if a.memory_layers != "all":
        gates = [k for k in tensors if k.endswith(".self_attn.gate")]  # "model.layers.<i>.self_attn.gate"
        keep = set(parse_ints(a.memory_layers, "--memory-layers", 0, len(gates) - 1))
        for k in gates:
            if layer_of(k) not in keep:
                tensors[k] = torch.full_like(tensors[k], CLOSED_GATE)
        packaged["memory_layers"] = sorted(keep)
    icfg["segment_len"] = a.segment_len
    if a.write_chunk is not None:
        if a.write_chunk < 0:
            raise UsageError(f"--write-chunk {a.write_chunk}: use 0 (whole segment) or a token count")
        icfg["write_chunk"] = packaged["write_chunk"] = a.write_chunk
    if a.sharpen is not None:
        packaged["sharpen"] = sharpen(tensors, icfg, meta["model_shape"], a.sharpen)
    save_adapter(tensors, {**meta, "packaged": packaged}, a.dst)
    layers = f", memory in layers {a.memory_layers}" if a.memory_layers != "all" else ""
    layers += f", writes of {a.write_chunk} tokens" if a.write_chunk else ""
    layers += f", memory read sharpened {a.sharpen}" if a.sharpen else ""
    layers += f", averaged with {a.average_with} (weight {a.weight})" if a.average_with else ""
    layers += f" in layers {a.average_layers}" if a.average_with and a.average_layers != "all" else ""
    print(f"{a.dst}: {len(tensors)} tensors, segment_len {a.segment_len} (trained at {trained}){layers}")


if __name__ == "__main__":
    try:
        main()
    except (UsageError, ModelError) as e:  # a bad option or adapter file: one line, no traceback
        raise SystemExit(f"error: {e}") from None
