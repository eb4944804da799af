"""How far each layer opens its memory, token by token: the gate sigmoid(β_t) on a pass-key sample's final
segment, at the answer and over the rest of the segment, with the needle in memory and with it local.

With the paper's constant gate the two numbers are the same; a query gate (model.InfiniConfig.gate_query)
or a content gate (gate_content) can open the memory where the question asks for something written long ago
and keep it closed for ordinary text, or for a needle that sits in the segment being read. The final
segment (the end of the document, the question and the prefill "The pass key is") is run with torch's ops
(the native read takes the same logits) and every layer's gate logits are recorded.

    python scripts/gate_trace.py --length 8k --depths 25,100
    python scripts/gate_trace.py --adapter runs/x/adapter.safetensors --layers 20-29
"""

from __future__ import annotations

import argparse

import torch

from infinicli import kernels
from infinicli import memory as mem
from infinicli.bench import passkey as P
from infinicli.bench.common import document_tokens, parse_ints, parse_length
from infinicli.session import Options, Session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--length", default="8k")
    ap.add_argument("--depths", default="25,100")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", default="20-29", help="first-last layer to print")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    m, S = eng.model, eng.segment_len
    lo, hi = (int(x) for x in a.layers.split("-"))
    length = parse_length(a.length)
    n_f = P.filler_sentences_for(eng, length)
    seen: list[torch.Tensor] = []  # gates [H, T] of the layers in order, for the current forward
    plain_mix = mem.gate_mix

    def recording_mix(a_mem: torch.Tensor, a_dot: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(beta.detach().float())
        seen.append(g.view(-1, 1).expand(-1, a_dot.shape[2]) if g.dim() == 1 else g[0])
        return plain_mix(a_mem, a_dot, beta)

    print(f"adapter {a.adapter}, {a.length}, segments of {S}: mean gate over heads, at the answer / the rest")
    for depth in parse_ints(a.depths, "--depths", 0, 100):
        key = P.make_key(a.seed, length, depth, 0)
        toks = document_tokens(eng, P.haystack_text(n_f, depth, key), P.DOC_NAME)
        state = eng.new_state()
        with torch.inference_mode():
            state.tail = list(toks)
            while len(state.tail) >= S:
                eng.write_segment(state, S)
            prompt = eng.question_tokens(P.QUESTION) + eng.tok.encode(P.PREFILL)
            memory, ftoks = eng.final_segment(state, prompt)
            seen.clear()
            mem.gate_mix = recording_mix
            try:
                with kernels.disabled():
                    m.forward_segment(torch.tensor([ftoks]), memory, write=False, logits="last")
            finally:
                mem.gate_mix = plain_mix
        kid = eng.tok.encode(" " + key)
        local = any(ftoks[i : i + len(kid)] == kid for i in range(len(ftoks)))
        print(f"depth {depth} %: key {key} {'in the final segment' if local else 'in memory'}")
        at_answer = torch.stack([g[:, -1].mean() for g in seen]).mean().item()
        elsewhere = torch.stack([g[:, :-1].mean() for g in seen]).mean().item()
        print(f"  all {len(seen)} layers: {at_answer:.3f} / {elsewhere:.3f}")
        for li, g in enumerate(seen):
            if lo <= li <= hi:
                ans, rest = g[:, -1].mean().item(), g[:, :-1].mean().item()
                top = g[:, -1].max().item()
                print(f"  layer {li:2d}: {ans:.3f} / {rest:.3f}   (most open head at the answer {top:.3f})")


if __name__ == "__main__":
    main()
