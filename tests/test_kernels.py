"""The native bf16 causal-attention kernel against torch's attention, and the model with it ≡ without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from infinicli import kernels


def native_or_skip() -> None:
    status = kernels.native_attention_status()
    if status != "native":
        pytest.skip(f"native attention kernel not in use here: {status}")


def qkv(B: int, H: int, Hkv: int, T: int, seed: int = 0, d: int = 64, layout: str = "bthd"):
    g = torch.Generator().manual_seed(seed)

    def make(h: int) -> torch.Tensor:
        if layout == "bthd":  # what the model passes: heads split out of [B, T, H·d] and transposed
            return (torch.randn(B, T, h, d, generator=g) * 1.5).transpose(1, 2).bfloat16()
        return (torch.randn(B, h, T, d, generator=g) * 1.5).bfloat16()

    return make(H), make(Hkv), make(Hkv)


@pytest.mark.parametrize(
    "B,H,Hkv,T,layout",
    [
        (1, 9, 3, 1024, "bthd"),  # the default model's shape at the default segment length
        (1, 9, 3, 1, "bthd"),
        (1, 9, 3, 63, "bhtd"),
        (1, 9, 3, 64, "bthd"),
        (1, 9, 3, 65, "bhtd"),
        (2, 4, 2, 130, "bthd"),
        (1, 2, 2, 200, "bhtd"),  # no GQA
        (1, 6, 1, 257, "bthd"),  # multi-query
    ],
)
def test_matches_fp32_attention_as_closely_as_torch_bf16(B, H, Hkv, T, layout):
    native_or_skip()
    q, k, v = qkv(B, H, Hkv, T, layout=layout)
    out = kernels.causal_attention(q, k, v)
    assert out is not None and out.shape == (B, H, T, 64) and out.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=H != Hkv)
    torch_bf16 = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=H != Hkv)
    err = (out.float() - ref).abs()
    err_torch = (torch_bf16.float() - ref).abs()
    assert err.max() <= 1.5 * err_torch.max() + 1e-3
    assert err.mean() <= 1.5 * err_torch.mean() + 1e-5


def test_is_causal_and_merges_heads_without_a_copy():
    native_or_skip()
    q, k, v = qkv(1, 9, 3, 100, seed=1)
    out = kernels.causal_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 60:] = 7.0  # changing later keys and values leaves earlier outputs unchanged
    v2[:, :, 60:] = -3.0
    out2 = kernels.causal_attention(q, k2, v2)
    torch.testing.assert_close(out[:, :, :60], out2[:, :, :60], rtol=0, atol=0)
    assert not torch.equal(out[:, :, 60:], out2[:, :, 60:])
    merged = out.transpose(1, 2).reshape(1, 100, 9 * 64)  # a view: [B, T, H, d] memory underneath
    assert merged.data_ptr() == out.data_ptr()


def test_declines_what_it_does_not_handle():
    q, k, v = qkv(1, 4, 2, 32)
    assert kernels.causal_attention(q.float(), k.float(), v.float()) is None  # fp32
    qd, kd, vd = qkv(1, 4, 2, 32, d=32)
    assert kernels.causal_attention(qd, kd, vd) is None  # head dim 32
    qg = q.detach().requires_grad_(True)
    assert kernels.causal_attention(qg, k, v) is None  # training: torch's kernel has the backward
    assert kernels.causal_attention(q, k[:, :, :16], v[:, :, :16]) is None  # keys of another length


def test_model_with_native_attention_matches_torch_attention(monkeypatch):
    """A whole InfiniLlama in bf16 (head dim 64) over three segments: native kernel vs torch's SDPA."""
    native_or_skip()
    from conftest import tiny_hf_config

    from infinicli.model import InfiniConfig, InfiniLlama, ModelConfig

    torch.manual_seed(0)
    hf = tiny_hf_config(
        vocab_size=101, hidden_size=192, num_attention_heads=3, num_key_value_heads=1, head_dim=64
    )
    cfg = ModelConfig.from_hf(hf.to_dict())
    model = InfiniLlama(cfg, InfiniConfig(segment_len=96)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    for blk in model.model.layers:
        blk.input_layernorm.weight.data.fill_(1.0)
        blk.post_attention_layernorm.weight.data.fill_(1.0)
        blk.self_attn.gate.data.fill_(-1.0)
    model = model.to(torch.bfloat16)
    segs = torch.randint(0, 101, (3, 1, 96))

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            m = model.empty_memory()
            for s in segs[:2]:
                _, m = model.forward_segment(s, m, logits=None)
            logits, m = model.forward_segment(segs[2], m)
        return logits.float(), m.M

    native_logits, native_M = run()
    calls = []
    real = kernels.causal_attention
    monkeypatch.setattr(kernels, "causal_attention", lambda *a: calls.append(1) or None)
    torch_logits, torch_M = run()
    monkeypatch.setattr(kernels, "causal_attention", real)
    assert len(calls) == 2 * 1 + 2  # reading skips the last layer's attention (memory write only)
    torch.testing.assert_close(native_logits, torch_logits, atol=0.05, rtol=0.05)
    rel = ((native_M - torch_M).norm() / torch_M.norm()).item()
    print(f"relative memory difference {rel:.2e}")
    assert rel < 0.01  # the memory differs only by bf16 rounding
    assert (native_logits.argmax(-1) == torch_logits.argmax(-1)).float().mean() > 0.95
