"""Do the memory keys know whose move a bAbI sentence is? Linear probes at the QA1 facts, per layer.

QA1 ("where is Mary?") needs the memory to file a room under the person who went there: the key written at the
room's tokens must carry the person, so that the question's query reads Mary's moves and not John's (eq. 3).
Sessions 27-32 found layer 23's read does not prefer the asked person (scripts/qa1_probe.py). This script asks
whether the information is there at all. The benchmark's QA1 documents are read into memory exactly as `infini
bench babilong` reads them; at the last token of each room word of every fact sentence in memory, it takes

  x     the hidden state entering the layer (what every projection of that layer sees), and
  σ(k)  the memory key written there (after the key convolution and sharpening, as eq. 4 writes it),

and fits a linear classifier (multinomial logistic regression, weight decay) from each to the person. Samples
of one seed train it, samples of another test it. High accuracy from x but not from σ(k) says the layer sees
the person but its keys do not carry it (a key-projection problem); low accuracy from x too says the person
is not in the layer's input at that token (the layers below would have to put it there).

    python scripts/person_probe.py --samples 30 --layers 0,12,22,23,26,29
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
import torch.nn.functional as F

from infinicli import memory as mem
from infinicli.babi import qa1_move
from infinicli.bench import babilong as B
from infinicli.bench.common import corpus_dir, parse_length, read_text
from infinicli.session import Options, Session


def collect(eng, sentences, layers: list[int], length: int, n: int, seed: int) -> tuple[dict, list[str]]:
    """Per layer, (x [N, C], σ(k) [N, Hkv·d]) at the room tokens of the QA1 facts in memory; their persons."""
    m = eng.model
    inputs: dict[int, list[torch.Tensor]] = {}
    feats: dict[int, tuple[list, list]] = {li: ([], []) for li in layers}
    people: list[str] = []

    def hook(i: int):
        return lambda mod, args: inputs.setdefault(i, []).append(args[0].detach()[0])

    for i, smp in enumerate(B.benchmark_samples("qa1", n, seed)):
        q, toks, _ = B.sample_document(eng, sentences, smp, "qa1", length, seed, i)
        inputs.clear()
        with torch.inference_mode():
            hooks = [m.model.layers[li].self_attn.register_forward_pre_hook(hook(li)) for li in layers]
            state = eng.new_state()
            state.tail.extend(toks)
            eng.write_ready(state)
            for h in hooks:
                h.remove()
            written = {li: torch.cat(inputs[li]) for li in layers}  # [T_mem, C]
            keys = {}
            for li in layers:
                att = m.model.layers[li].self_attn
                # per segment, as the model wrote them (the key convolution restarts at each segment)
                ks = [att._mem_keys(x[None], att.k_proj(x[None]))[0] for x in inputs[li]]  # [Hkv, S, d]
                sk = mem.sigma(torch.cat(ks, dim=1).float())  # [Hkv, T_mem, d]
                keys[li] = sk.transpose(0, 1).reshape(sk.shape[1], -1)  # [T_mem, Hkv·d]
        T_mem = written[layers[0]].shape[0]
        for f, span in zip(smp.facts, B.fact_spans(eng, toks, smp.facts), strict=True):
            move = qa1_move(f)
            if move is None or span is None or span[1] > T_mem:
                continue  # not a move, not found as its own tokens, or read locally in the final segment
            at = span[0]
            room_end = at + len(eng.tok.encode(" " + f.rstrip().rstrip("."))) - 1  # last token of the room
            people.append(move[0])
            for li in layers:
                feats[li][0].append(written[li][room_end].float())
                feats[li][1].append(keys[li][room_end])
    return {li: (torch.stack(a), torch.stack(b)) for li, (a, b) in feats.items()}, people


def probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, classes: int) -> float:
    """Test accuracy of a multinomial logistic regression fitted on standardised features."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-5
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    lin = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(500):
        opt.zero_grad()
        F.cross_entropy(lin(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return (lin(xte).argmax(-1) == yte).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=512)
    ap.add_argument("--length", default="2k")
    ap.add_argument("--samples", type=int, default=30, help="QA1 documents per seed (train and test)")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--test-seed", type=int, default=1)
    ap.add_argument("--layers", default="0,12,22,23,26,29")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)

    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads)).engine
    layers = [int(x) for x in a.layers.split(",")]
    sentences = B.book_sentences(read_text(corpus_dir() / B.DEFAULT_HAYSTACK))
    length = parse_length(a.length)
    tr, ptr = collect(eng, sentences, layers, length, a.samples, a.train_seed)
    te, pte = collect(eng, sentences, layers, length, a.samples, a.test_seed)
    names = sorted(set(ptr) | set(pte))
    ytr = torch.tensor([names.index(p) for p in ptr])
    yte = torch.tensor([names.index(p) for p in pte])
    majority = Counter(pte).most_common(1)[0][1] / len(pte)
    print(f"{len(ptr)} training facts, {len(pte)} test facts, {len(names)} people; majority {majority:.2f}")
    print("layer | person from x | person from σ(k)")
    for li in layers:
        ax = probe(tr[li][0], ytr, te[li][0], yte, len(names))
        ak = probe(tr[li][1], ytr, te[li][1], yte, len(names))
        print(f"{li:5d} | {ax:13.2f} | {ak:16.2f}")


if __name__ == "__main__":
    main()
