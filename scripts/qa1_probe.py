"""Where the memory read goes at a BABILong QA1 answer: the person's last move, an earlier one, or others'.

For the benchmark's QA1 samples (`infini bench babilong --task qa1`: same stories, haystack, seed) the script
reads each document into memory exactly as the benchmark does, then runs the final segment up to the answer
and measures, per layer, the weight of the memory read (eq. 3's denominator, as scripts/memory_probe.py)

    w_t = σ(q)·σ(k_t) / σ(q)·z

that the query at the answer position puts on the tokens of three kinds of fact sentence in memory: the asked
person's last move (the answer), their earlier moves, and other people's moves. Each share is divided by that
kind's share of the memory's tokens (1.0 = no preference). A memory that answers "where is X now" reads the
last move more than the earlier ones; one that cannot tell people or times apart reads them alike.

    python scripts/qa1_probe.py --length 4k --samples 10 --seed 0 --segment-len 512
    python scripts/qa1_probe.py --adapter runs/s27/s12.safetensors --json runs/s26/soup50/bl4k_s0.json
"""

from __future__ import annotations

import argparse
import json

import torch

from infinicli import memory as mem
from infinicli.babi import qa1_move
from infinicli.bench import babilong as B
from infinicli.bench.common import corpus_dir, parse_length, read_text
from infinicli.session import Options, Session

KINDS = ("last move", "earlier moves", "others' moves")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=512)
    ap.add_argument("--length", default="4k")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", default="", help="a bench babilong JSON of the same seed: split by right / wrong"
    )
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    m = eng.model
    L, H, G = m.cfg.n_layers, m.cfg.n_heads, m.cfg.n_heads // m.cfg.n_kv_heads
    length = parse_length(a.length)
    sentences = B.book_sentences(read_text(corpus_dir() / B.DEFAULT_HAYSTACK))
    chosen = B.benchmark_samples("qa1", a.samples, a.seed)
    correct = {}
    if a.json:
        rs = json.load(open(a.json))["results"]
        correct = {r["sample"]: r["correct"] for r in rs if r["task"] == "qa1" and r["length"] == length}

    inputs: dict[int, list[torch.Tensor]] = {}  # layer → attention inputs of every written segment

    def capture() -> list:
        def hook(i: int):
            return lambda mod, args: inputs.setdefault(i, []).append(args[0].detach()[0])

        return [blk.self_attn.register_forward_pre_hook(hook(i)) for i, blk in enumerate(m.model.layers)]

    per: dict[str, list[torch.Tensor]] = {"right": [], "wrong": [], "all": []}
    for i, smp in enumerate(chosen):
        q, toks, _ = B.sample_document(eng, sentences, smp, "qa1", length, a.seed, i)
        person = smp.question.removeprefix("Where is ").removesuffix("?")
        inputs.clear()
        with torch.inference_mode():
            hooks = capture()
            state = eng.new_state()
            state.tail.extend(toks)
            eng.write_ready(state)
            for h in hooks:
                h.remove()
            written = {li: list(x) for li, x in inputs.items()}  # layer → [S_j, C] per segment
            T_mem = sum(x.shape[0] for x in written[0])
            memory, ftoks = eng.final_segment(state, eng.question_tokens(q))
            inputs.clear()
            hooks = capture()
            m.forward_segment(torch.tensor([ftoks]), memory, write=False, logits="last")
            for h in hooks:
                h.remove()
        # token spans of the facts that went into memory, by kind
        kind_of = torch.full((T_mem,), -1)
        who = [(mv or ("", ""))[0] for mv in map(qa1_move, smp.facts)]  # whose move each fact is
        last_of_person = max(j for j, w in enumerate(who) if w == person)
        for j, span in enumerate(B.fact_spans(eng, toks, smp.facts)):
            if span is None or span[1] > T_mem:
                continue  # not found as its own tokens, or in the final segment (read locally)
            k = 0 if j == last_of_person else (1 if who[j] == person else 2)
            kind_of[span[0] : span[1]] = k
        frac = torch.tensor([(kind_of == k).float().mean().item() for k in range(3)])
        rel = torch.full((L, H, 3), float("nan"))  # per layer and query head
        z = memory.z[:, 0]  # [L, Hkv, d]
        for li, blk in enumerate(m.model.layers):
            att = blk.self_attn
            xq = inputs[li][0][-1:]  # the answer position, [1, C]
            sq = mem.sigma(att._mem_queries(xq[None], att.q_proj(xq[None]))[0, :, -1].float())  # [H, d]
            keys = [att._mem_keys(x[None], att.k_proj(x[None]))[0] for x in written[li]]  # per segment
            sk = mem.sigma(torch.cat(keys, dim=1).float())  # [Hkv, T_mem, d]
            kv = torch.arange(H) // G
            w = torch.einsum("hd,htd->ht", sq, sk[kv]) / (sq * z[li, kv]).sum(-1, keepdim=True)  # [H, T_mem]
            for k in range(3):
                if frac[k] > 0:
                    rel[li, :, k] = w[:, kind_of == k].sum(-1) / w.sum(-1) / frac[k]
        tag = {True: "right", False: "wrong"}.get(correct.get(i), "")
        per["all"].append(rel)
        if tag:
            per[tag].append(rel)
        print(
            f"#{i} {smp.question} {smp.answer} {tag}: {T_mem} tokens in memory, fact tokens {frac.tolist()}"
        )

    print("\nread weight on each kind of fact over its share of memory tokens (1.0 = none), mean over heads")
    for name, rels in per.items():
        if not rels:
            continue
        r = torch.stack(rels).nanmean(0)  # [L, H, 3]
        print(f"\n{name} ({len(rels)} samples): layer | " + " | ".join(KINDS))
        for li in range(L):
            print(f"  {li:2d} | " + " | ".join(f"{r[li].mean(0)[k]:6.2f}" for k in range(3)))
        top = int(r.mean(1).sum(-1).argmax())
        print(
            f"  layer {top} by query head: "
            + "; ".join(f"h{h} " + "/".join(f"{r[top, h, k]:.0f}" for k in range(3)) for h in range(H))
        )


if __name__ == "__main__":
    main()
