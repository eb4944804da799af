"""Would int8 matmuls make reading faster on this CPU, and what do they cost in perplexity? (issue 4 probe)

Not product code: a measurement. It swaps every q/k/v/o/gate/up/down projection of the default model for
fbgemm's dynamic int8 linear (torch.ops.quantized, weights int8 per output channel) in one of three ways and
reports reading tokens/s and `infini bench ppl`'s three perplexities on Anna Karenina (held out), fp32 first:

* tensor -- plain dynamic quantization: one activation scale per matmul (what torch's quantize_dynamic does)
* token  -- one activation scale per token: rows scaled to max-abs 1 before the kernel, the output rescaled
* smooth -- per token plus SmoothQuant (Xiao et al. 2023): per input channel s = max|X|^α / max|W|^(1-α) from
  4K tokens of War and Peace, activations divided by s and weights multiplied by it (exact in real math)

Prefix a mode with "rr0" for full 8-bit activations (fbgemm's default on x86 is 7 bits, reduce_range), and
give α after "smooth" (smooth0.7). Usage (one thread; the segment length is the adapter's):
    python scripts/int8_probe.py fp32 tensor token smooth rr0token rr0smooth rr0smooth0.7
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
import torch.nn as nn

from infinicli.bench import ppl as P
from infinicli.bench.common import corpus_dir
from infinicli.session import Options, Session

NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
NAMES += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class Int8Linear(nn.Module):
    """y ≈ x Wᵀ with fbgemm's dynamic int8 kernel, activation scales per matmul, per token, or smoothed."""

    def __init__(self, lin: nn.Linear, amax: torch.Tensor, mode: str, alpha: float, reduce_range: bool):
        super().__init__()
        W = lin.weight.detach().float()  # [N, K]
        self.mode, self.reduce_range, self.out_features = mode, reduce_range, W.shape[0]
        if mode == "smooth":
            s = amax.clamp(min=1e-5) ** alpha / W.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)  # [K]
            self.inv_s = 1 / s
            W = W * s
        scale = (W.abs().amax(1).clamp(min=1e-8) / 127).double()
        zero = torch.zeros(W.shape[0], dtype=torch.long)
        qw = torch.quantize_per_channel(W, scale, zero, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(qw, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.mode == "tensor":
            y = torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)
        else:
            if self.mode == "smooth":
                x = x * self.inv_s
            r = x.abs().amax(-1, keepdim=True).clamp_(min=1e-8)  # per-token scale
            y = torch.ops.quantized.linear_dynamic(x / r, self.packed, self.reduce_range).mul_(r)
        return y.view(*shape[:-1], self.out_features)


def main(modes: list[str]) -> None:
    warnings.filterwarnings("ignore")  # torch.quantize_per_channel is deprecated; this is a probe
    torch.set_num_threads(1)
    eng = Session(Options(dtype="fp32", threads=1)).engine
    model, seg = eng.model, eng.segment_len
    books = corpus_dir() / "books"
    scored = P.book_tokens(eng, books / "anna_karenina.txt", 4 * seg)
    calib_text = P.book_tokens(eng, books / "war_and_peace.txt", 4 * seg)

    amax: dict[str, torch.Tensor] = {}  # per-channel max |input| of every projection (calibration)

    def hook(name: str):
        def f(mod, inp, out):
            a = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).amax(0)
            amax[name] = torch.maximum(amax[name], a) if name in amax else a

        return f

    layers = list(model.model.layers)
    orig = {(i, n): b.get_submodule(n) for i, b in enumerate(layers) for n in NAMES}
    handles = [m.register_forward_hook(hook(f"{i}.{n}")) for (i, n), m in orig.items()]
    with torch.inference_mode():
        mem = model.empty_memory(1)
        for j in range(0, len(calib_text), seg):
            _, mem = model.forward_segment(torch.tensor([calib_text[j : j + seg]]), mem, logits="last")
    for h in handles:
        h.remove()

    for mode in modes:
        rr = not mode.startswith("rr0")
        base = mode.removeprefix("rr0")
        alpha = float(base[6:] or 0.5) if base.startswith("smooth") else 0.5
        base = "smooth" if base.startswith("smooth") else base
        for (i, n), lin in orig.items():
            parent, attr = n.split(".")
            new = lin if base == "fp32" else Int8Linear(lin, amax[f"{i}.{n}"], base, alpha, rr)
            setattr(layers[i].get_submodule(parent), attr, new)
        ids = torch.tensor([scored[:seg]])
        with torch.inference_mode():
            _, mem = model.forward_segment(ids, model.empty_memory(1), logits=None)
            t0 = time.perf_counter()
            for _ in range(3):
                model.forward_segment(ids, mem, logits=None)
            tok_s = 3 * seg / (time.perf_counter() - t0)
        r = P.perplexities(eng, scored)
        ppl = {k: round(v["ppl"], 3) for k, v in r["methods"].items()}
        print(f"{mode:14s} read {tok_s:6.1f} tok/s  ppl {ppl}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["fp32", "token", "smooth"])
