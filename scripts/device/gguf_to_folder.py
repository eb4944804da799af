"""Rebuild the converted model folder from the SmolLM2 GGUF where neither the Hub nor pip can be reached
(the lent GPU machine).

Dequantises with the `gguf` package alone (no transformers), undoes llama.cpp's q/k row permutation and
writes model.safetensors with the same fp32 tensors as `infini models pull`; the small files (config,
tokenizer, infini.json) are copied from a folder that `infini models pull` made. Checked bit-equal:
    python scripts/device/gguf_to_folder.py MODEL.gguf SMALL_DIR OUT_DIR --compare PULLED/model.safetensors
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import load_file, save_file

NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert permutation of q/k rows (per head: interleaved → half-split RoPE)."""
    dim = w.shape[0] // heads // 2
    return w.reshape(heads, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def convert(gguf_path: Path) -> dict[str, torch.Tensor]:
    r = GGUFReader(str(gguf_path))
    f = {k: r.fields[k] for k in r.fields}

    def scalar(key: str) -> int:
        field = f[key]
        return int(field.parts[field.data[0]][0])

    heads, kv = scalar("llama.attention.head_count"), scalar("llama.attention.head_count_kv")
    out: dict[str, torch.Tensor] = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne0 (columns) first
        w = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name)
            if not m or m.group(2) not in NAMES:
                raise SystemExit(f"unexpected tensor {t.name}")
            name = f"model.layers.{m.group(1)}.{NAMES[m.group(2)]}.weight"
            if m.group(2) == "attn_q":
                w = unpermute(w, heads)
            elif m.group(2) == "attn_k":
                w = unpermute(w, kv)
        out[name] = torch.from_numpy(np.ascontiguousarray(w))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", type=Path)
    ap.add_argument("small", type=Path, help="folder with config.json, tokenizer files, infini.json")
    ap.add_argument("out", type=Path)
    ap.add_argument("--compare", type=Path, default=None)
    a = ap.parse_args()
    tensors = convert(a.gguf)
    if a.compare:
        ref = load_file(str(a.compare))
        assert sorted(ref) == sorted(tensors), (sorted(set(ref) ^ set(tensors)))[:5]
        bad = [k for k in ref if not torch.equal(ref[k], tensors[k])]
        print(f"compared {len(ref)} tensors: {len(bad)} differ {bad[:3]}")
        if bad:
            raise SystemExit(1)
    a.out.mkdir(parents=True, exist_ok=True)
    for p in a.small.iterdir():
        if p.is_file() and p.name != "model.safetensors":
            shutil.copy(p, a.out / p.name)
    save_file(tensors, str(a.out / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {a.out} ({sum(t.numel() for t in tensors.values()):,} parameters)")


if __name__ == "__main__":
    main()
