"""Does a sharper memory read put the pass key's digits in order? Scale the memory queries and keys.

σ = ELU + 1 is not homogeneous: σ(a·x) for a > 1 pushes negative coordinates towards 0 and stretches the
positive ones, so the read weight σ(a·q)·σ(a·k_t) / σ(a·q)·z concentrates on the keys that match best. If the
retrieval heads' queries already told the digits apart, only weakly, a larger a would pull the answer's
digits into order. The script multiplies the memory-path query and key (before σ, after the memory-scoped
LoRA and key convolution: model.InfiniConfig.mem_scale; local attention untouched) of the chosen layers by
each a (1: the adapter's own read), and runs the `infini bench passkey` samples:

    python scripts/sharpness_probe.py --layers 22,23 --scales 1,2,3 --lengths 2k,8k
    python scripts/sharpness_probe.py --layers all --scales 1,1.5 --segment-len 256 --lengths 2k

It prints, per a: exact keys, exact keys among the needles read from memory (not in the final segment),
samples with the right digits in any order, and digits in the right place.
"""

from __future__ import annotations

import argparse
import math

import torch

from infinicli.bench import passkey as P
from infinicli.bench.common import parse_ints, parse_lengths
from infinicli.model import InfiniAttention
from infinicli.session import Options, Session


def set_scale(att: InfiniAttention, a: float | None, original: torch.Tensor) -> None:
    """Set the memory sharpness of one attention layer to ln a, or for None back to its adapter's value."""
    att.mem_scale.data.copy_(original if a is None else torch.full_like(original, math.log(a)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--layers", default="22,23", help="comma-separated layer indices, or 'all'")
    ap.add_argument("--scales", default="1,2,3")
    ap.add_argument("--lengths", default="2k,8k")
    ap.add_argument("--depths", default="0,25,50,75")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    eng.model.icfg.mem_scale = True
    eng.model.add_mem_scale()  # s = 0 where the adapter has none: the read as shipped
    layers = eng.model.model.layers
    original = [blk.self_attn.mem_scale.detach().clone() for blk in layers]
    chosen = range(len(layers)) if a.layers == "all" else parse_ints(a.layers, "--layers", 0, len(layers) - 1)
    settings = P.Settings(
        lengths=parse_lengths(a.lengths),
        depths=parse_ints(a.depths, "--depths", 0, 100),
        samples=a.samples,
        seed=a.seed,
    )
    for scale in (float(s) for s in a.scales.split(",")):
        for i in chosen:
            set_scale(layers[i].self_attn, None if scale == 1.0 else scale, original[i])
        rs = P.run(eng, settings)["results"]
        in_mem = [r for r in rs if P.needle_in_memory(r, eng.segment_len)]
        found = [r["found"] or "" for r in rs]
        same = sum(sorted(f) == sorted(r["key"]) for f, r in zip(found, rs, strict=True))
        pairs = zip(found, rs, strict=True)
        placed = sum(x == y for f, r in pairs for x, y in zip(f, r["key"], strict=False))
        print(
            f"a={scale:g} layers={a.layers}: exact {sum(r['correct'] for r in rs)}/{len(rs)}, "
            f"from memory {sum(r['correct'] for r in in_mem)}/{len(in_mem)}, same digits {same}/{len(rs)}, "
            f"digits in place {placed}/{5 * len(rs)}"
        )
        for r in rs:
            print(f"    {r['length']:>7} {r['depth']:>3}% key {r['key']} → {r['output']!r}")


if __name__ == "__main__":
    main()
