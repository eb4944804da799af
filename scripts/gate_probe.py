"""Perplexity with the memory kept only in chosen layers: every other layer's gate closed (sigmoid(β) = 0).

An ablation, not a product setting: it shows how much of the memory's perplexity cost comes from layers
whose reads do not select anything (see scripts/memory_probe.py). Same scoring as `infini bench ppl`.

    python scripts/gate_probe.py --keep 22,23 --tokens 8k
    python scripts/gate_probe.py --keep all --adapter runs/x/adapter.safetensors
"""

from __future__ import annotations

import argparse

from infinicli.bench import ppl
from infinicli.bench.common import corpus_dir, parse_ints, parse_length
from infinicli.memory import CLOSED_GATE
from infinicli.session import Options, Session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--keep", default="22,23", help="layers whose memory stays ('all': none closed)")
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--tokens", default="8k")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    layers = eng.model.model.layers
    if a.keep != "all":
        keep = set(parse_ints(a.keep, "--keep", 0, len(layers) - 1))
        for i, blk in enumerate(layers):
            if i not in keep:
                blk.self_attn.gate.data.fill_(CLOSED_GATE)  # local attention only
    toks = ppl.book_tokens(eng, corpus_dir() / ppl.DEFAULT_BOOK, parse_length(a.tokens))
    r = ppl.perplexities(eng, toks)
    print(f"memory kept in layers {a.keep}, {r['tokens']} tokens, segments of {eng.segment_len}:")
    for m, v in r["methods"].items():
        print(f"  {m:15s} {v['ppl']:.3f}")


if __name__ == "__main__":
    main()
