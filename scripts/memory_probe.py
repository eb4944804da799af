"""What the memory read returns at a pass-key answer: which segment and which needle tokens each head reads.

For one pass-key sample (the `infini bench passkey` document, key from its seed) the script reads the document
into memory, then runs the final segment with the true key appended (teacher forcing) and measures, per
layer and query head, the share of the memory read

    w_t = σ(q)·σ(k_t) / σ(q)·z                  (eq. 3's denominator: the weight token t gets in the read)

that falls on the needle's segment (against 1/segments for a uniform read), and, for the heads that read
the needle's segment most, the five needle-segment tokens with the largest w_t at each answer position.
A memory that holds the key in order reads the digit that comes next; a memory that holds only a set of
digits reads the same ones whatever digit comes next.

    python scripts/memory_probe.py --segment-len 1024 --length 8k --depth 25
    python scripts/memory_probe.py --adapter runs/x/adapter.safetensors --segment-len 256 --length 8k
"""

from __future__ import annotations

import argparse

import torch

from infinicli import memory as mem
from infinicli.bench import passkey as P
from infinicli.bench.common import document_tokens, parse_length
from infinicli.session import Options, Session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--length", default="8k")
    ap.add_argument("--depth", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--heads", type=int, default=6, help="heads to detail")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    m, S = eng.model, eng.segment_len
    H, G = m.cfg.n_heads, m.cfg.n_heads // m.cfg.n_kv_heads
    length = parse_length(a.length)
    n_f = P.filler_sentences_for(eng, length)
    key = P.make_key(a.seed, length, a.depth, 0)
    toks = document_tokens(eng, P.haystack_text(n_f, a.depth, key), P.DOC_NAME)
    kid = eng.tok.encode(" " + key)
    pos = next(i for i in range(len(toks)) if toks[i : i + len(kid)] == kid)
    ns = pos // S  # the needle's segment
    if (len(toks) // S) <= ns:
        raise SystemExit(f"the needle (token {pos}) is in the final segment: choose a smaller depth")

    inputs: dict[int, torch.Tensor] = {}  # layer → attention input of the current capture

    def capture() -> list:
        def hook(i: int):
            return lambda mod, args: inputs.__setitem__(i, args[0].detach().clone())

        return [blk.self_attn.register_forward_pre_hook(hook(i)) for i, blk in enumerate(m.model.layers)]

    state = eng.new_state()
    dz_needle = None
    with torch.inference_mode():
        state.tail = list(toks)
        k = 0
        while len(state.tail) >= S:
            hooks = capture() if k == ns else []
            z_before = state.memory.z.clone()
            eng.write_segment(state, S)
            for h in hooks:
                h.remove()
            if k == ns:
                dz_needle = (state.memory.z - z_before)[:, 0]  # [L, Hkv, d]
                x_needle = dict(inputs)
            k += 1
        prompt = eng.question_tokens(P.QUESTION) + eng.tok.encode(P.PREFILL) + kid
        memory, ftoks = eng.final_segment(state, prompt)
        hooks = capture()
        m.forward_segment(torch.tensor([ftoks]), memory, write=False, logits="last")
        for h in hooks:
            h.remove()
        z = memory.z[:, 0]  # [L, Hkv, d]
        nseg = memory.segments
        qpos = list(range(len(ftoks) - len(kid) - 1, len(ftoks) - 1))  # "is", digits 1-4 → next token
        seg_names = [eng.tok.decode([t]) for t in toks[ns * S : (ns + 1) * S]]
        print(f"key {key}: {len(toks)} tokens, {nseg} segments of {S} in memory, needle in segment {ns}")
        print(f"share of the read on the needle's segment (uniform = {1 / nseg:.3f}), mean over query heads:")
        rows, sq_at = [], {}  # sq_at: layer → σ(q) at the answer positions [P, H, d]
        for li, blk in enumerate(m.model.layers):
            att = blk.self_attn
            xq = inputs[li]
            q = att._mem_queries(xq, att.q_proj(xq))[0].transpose(0, 1).float()  # [T, H, d]
            sq = sq_at[li] = mem.sigma(q[qpos])  # [P, H, d]
            kv = torch.arange(H) // G
            share = (sq * dz_needle[li, kv]).sum(-1) / (sq * z[li, kv]).sum(-1)  # [P, H]
            gate = torch.sigmoid(att._gate_logits(att._mem_delta("q_proj", xq, att.q_proj(xq))).float())
            gate = gate[0, :, qpos].mean(-1) if gate.dim() == 3 else gate  # [H], at the answer positions
            print(f"  layer {li:2d}: {share.mean():.3f} (best head {share.mean(0).max():.3f})")
            rows += [(share[:, h].mean().item(), li, h, gate[h].item()) for h in range(H)]
        off = pos - ns * S  # where the key (" " + digits) starts in the needle's segment
        print(
            "most needle-selective heads: the 5 needle-segment tokens read most at each answer position "
            "(token@offset, the space before the key @0: weight)"
        )
        for share, li, h, gate in sorted(rows, reverse=True)[: a.heads]:
            att = m.model.layers[li].self_attn
            xk = x_needle[li]
            sk = mem.sigma(att._mem_keys(xk, att.k_proj(xk)).float())[0, h // G]  # [S, d]
            cells = []
            for i, p in enumerate(qpos):
                sq = sq_at[li][i, h]  # [d]
                w = (sk @ sq) / (sq @ z[li, h // G])  # [S]
                top = torch.topk(w, 5).indices.tolist()
                here, nxt = eng.tok.decode([ftoks[p]]), eng.tok.decode([ftoks[p + 1]])
                read = " ".join(f"{seg_names[j]!r}@{j - off}:{w[j]:.2f}" for j in top)
                cells.append(f"{here!r}→{nxt!r}: {read}")
            print(f"  L{li} h{h} (gate {gate:.2f}, share {share:.2f}) | " + " | ".join(cells))


if __name__ == "__main__":
    main()
