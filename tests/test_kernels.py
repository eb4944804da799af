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
        (1, 9, 3, 512, "bthd"),  # the default model's shape at the default segment length
        (1, 9, 3, 1024, "bhtd"),  # ... and at the default before session 23
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


@pytest.mark.parametrize(
    "extras",
    [
        {},
        {"lora_rank": 4, "lora_scope": "memory", "mem_scale": True},  # the shipped adapter's kind
        {"key_conv": 3, "write_chunk": 40, "update_rule": "delta"},
        {"update_rule": "linear"},
        {"lora_rank": 4, "lora_scope": "memory", "gate_query": True},  # a gate per token
        {"lora_rank": 4, "lora_scope": "memory", "gate_query": True, "gate_content": True},
    ],
)
def test_model_with_native_kernels_matches_torch(extras):
    """A whole InfiniLlama in bf16 (head dim 64) over three segments: the native kernels (attention with RoPE,
    RMSNorm, SiLU·up, memory read and write) against torch's ops for the same math."""
    native_or_skip()
    from conftest import tiny_hf_config

    from infinicli.model import InfiniConfig, InfiniLlama, ModelConfig

    torch.manual_seed(0)
    hf = tiny_hf_config(
        vocab_size=101, hidden_size=192, num_attention_heads=3, num_key_value_heads=1, head_dim=64
    )
    cfg = ModelConfig.from_hf(hf.to_dict())
    model = InfiniLlama(cfg, InfiniConfig(segment_len=96, **extras)).eval()
    model.add_lora()
    model.add_key_conv()
    model.add_mem_scale()
    model.add_gate_query()
    model.add_gate_content()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    for blk in model.model.layers:
        blk.input_layernorm.weight.data.uniform_(0.8, 1.2)
        blk.post_attention_layernorm.weight.data.uniform_(0.8, 1.2)
        blk.self_attn.gate.data.fill_(-1.0)
        if getattr(blk.self_attn, "mem_scale", None) is not None:
            blk.self_attn.mem_scale.data.uniform_(0.0, 0.7)
        if getattr(blk.self_attn, "mem_k_conv", None) is not None:
            blk.self_attn.mem_k_conv.data[..., -1] += 1.0
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
    with kernels.disabled():
        torch_logits, torch_M = run()
    torch.testing.assert_close(native_logits, torch_logits, atol=0.05, rtol=0.05)
    rel = ((native_M - torch_M).norm() / torch_M.norm()).item()
    print(f"relative memory difference {rel:.2e}")
    assert rel < 0.01  # the memory differs only by bf16 rounding
    assert (native_logits.argmax(-1) == torch_logits.argmax(-1)).float().mean() > 0.95


# -- fused kernels of the reading path -----------------------------------------------------------------------


def test_rope_inside_the_kernel_matches_rope_applied_first():
    native_or_skip()
    from infinicli.model import apply_rope, rope_tables

    q, k, v = qkv(1, 9, 3, 200, seed=3)
    cos, sin = rope_tables(64, 100000.0, 0, 200, torch.device("cpu"), torch.float32)
    fused = kernels.causal_attention(q, k, v, cos, sin)
    qr = apply_rope(q.float(), cos, sin)
    kr = apply_rope(k.float(), cos, sin)
    ref = F.scaled_dot_product_attention(qr, kr, v.float(), is_causal=True, enable_gqa=True)
    torch_bf16 = F.scaled_dot_product_attention(
        qr.bfloat16(), kr.bfloat16(), v, is_causal=True, enable_gqa=True
    )
    assert fused is not None
    assert (fused.float() - ref).abs().max() <= 1.5 * (torch_bf16.float() - ref).abs().max() + 1e-3
    assert kernels.causal_attention(q, k, v, cos[:10], sin[:10]) is None  # tables of another length


@pytest.mark.parametrize("shape", [(1, 100, 576), (3, 7, 64), (1, 1, 16)])
def test_rms_norm_matches_llama_rmsnorm(shape):
    native_or_skip()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=g) * 3).bfloat16()
    w = (torch.rand(shape[-1], generator=g) + 0.5).bfloat16()
    ref = w * F.rms_norm(x.float(), (shape[-1],), eps=1e-5).to(torch.bfloat16)
    out = kernels.rms_norm(x, w, 1e-5)
    assert out is not None and out.dtype == torch.bfloat16 and out.shape == x.shape
    # the same roundings as torch's: at most one bf16 step apart (a different order of the sum of squares)
    assert ((out.float() - ref.float()).abs() <= ref.float().abs() * 2**-7 + 1e-6).all()
    assert kernels.rms_norm(x[..., :8].contiguous(), w[:8], 1e-5) is None  # C not a multiple of 16
    assert kernels.rms_norm(x.float(), w, 1e-5) is None


def test_silu_mul_in_place():
    native_or_skip()
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(5, 1537, generator=g) * 4).bfloat16()  # an odd size: the tail is masked
    b = torch.randn(5, 1537, generator=g).bfloat16()
    ref = F.silu(a.float()) * b.float()
    out = kernels.silu_mul_(a.clone(), b)
    assert out is not None
    assert ((out.float() - ref).abs() <= ref.abs() * 2**-7 + 1e-6).all()  # one rounding to bf16


def memory_case(T: int, H: int, Hkv: int, seed: int, segments: int = 2):
    """bf16 projections and an fp32 memory written by torch's eq. 5 from `segments` random segments."""
    from infinicli import memory as mem

    g = torch.Generator().manual_seed(seed)
    M = torch.zeros(1, Hkv, 64, 64)
    z = torch.zeros(1, Hkv, 64)
    for _ in range(segments):
        sk = mem.sigma(torch.randn(1, Hkv, 300, 64, generator=g))
        M, z = mem.update(M, z, sk, torch.randn(1, Hkv, 300, 64, generator=g))
    q = torch.randn(1, T, H * 64, generator=g).bfloat16()
    k = torch.randn(1, T, Hkv * 64, generator=g).bfloat16()
    v = torch.randn(1, T, Hkv * 64, generator=g).bfloat16()
    return q, k, v, M, z


@pytest.mark.parametrize("T,H,Hkv,sharpen", [(1024, 9, 3, True), (67, 9, 3, False), (5, 2, 2, True)])
def test_memory_read_matches_eq3_and_eq6(T, H, Hkv, sharpen):
    native_or_skip()
    from infinicli import memory as mem

    q, _, _, M, z = memory_case(T, H, Hkv, seed=T)
    beta = torch.linspace(-3, 2, H)
    scale = torch.linspace(0.8, 2.0, H) if sharpen else None
    a_dot = torch.randn(1, T, H, 64).bfloat16().transpose(1, 2)  # the attention kernel's layout
    qh = q.view(1, T, H, 64).transpose(1, 2).float()
    if scale is not None:
        qh = qh * scale.view(1, H, 1, 1)
    sq = mem.sigma(qh).reshape(1, Hkv, H // Hkv * T, 64)
    a_mem = mem.retrieve(sq, M, z).view(1, H, T, 64)
    ref = torch.lerp(a_dot.float(), a_mem, torch.sigmoid(beta).view(1, H, 1, 1))
    out = kernels.memory_read(q, scale, M, z, beta, a_dot.clone(), 1e-6, mem_out=True)
    assert out is not None
    mixed, mem_out = out
    assert (mixed.float() - ref).abs().max() <= ref.abs().max() * 2**-7
    g_mem = (torch.sigmoid(beta).view(1, H, 1, 1) * a_mem).transpose(1, 2).reshape(1, T, H * 64)
    assert (mem_out.float() - g_mem).abs().max() <= g_mem.abs().max() * 2**-7

    # a gate per head and token (model.InfiniConfig.gate_query): logits [1, H, T]
    beta_t = torch.randn(1, H, T, generator=torch.Generator().manual_seed(1)) * 3
    ref_t = torch.lerp(a_dot.float(), a_mem, torch.sigmoid(beta_t).unsqueeze(-1))
    out = kernels.memory_read(q, scale, M, z, beta_t, a_dot.clone(), 1e-6, mem_out=True)
    assert out is not None
    mixed_t, mem_out_t = out
    assert (mixed_t.float() - ref_t).abs().max() <= ref_t.abs().max() * 2**-7
    g_mem_t = (torch.sigmoid(beta_t).unsqueeze(-1) * a_mem).transpose(1, 2).reshape(1, T, H * 64)
    assert (mem_out_t.float() - g_mem_t).abs().max() <= g_mem_t.abs().max() * 2**-7
    assert kernels.memory_read(q, scale, M, z, beta_t[..., :-1], a_dot.clone(), 1e-6) is None  # wrong shape

    # a content gate: + (v·A_mem + u·A_dot)/8 on the logit of every row
    v, u = torch.randn(H, 64, generator=torch.Generator().manual_seed(2)), torch.randn(H, 64) * 0.5
    beta_c = (
        beta_t + (torch.einsum("bhtd,hd->bht", a_mem, v) + torch.einsum("bhtd,hd->bht", a_dot.float(), u)) / 8
    )
    ref_c = torch.lerp(a_dot.float(), a_mem, torch.sigmoid(beta_c).unsqueeze(-1))
    out = kernels.memory_read(q, scale, M, z, beta_t, a_dot.clone(), 1e-6, mem_out=True, content=(v, u))
    assert out is not None
    mixed_c, mem_out_c = out
    assert (mixed_c.float() - ref_c).abs().max() <= ref_c.abs().max() * 2**-6
    g_mem_c = (torch.sigmoid(beta_c).unsqueeze(-1) * a_mem).transpose(1, 2).reshape(1, T, H * 64)
    assert (mem_out_c.float() - g_mem_c).abs().max() <= g_mem_c.abs().max() * 2**-6
    assert not torch.allclose(mixed_c.float(), mixed_t.float())


@pytest.mark.parametrize("rule", ["delta", "linear"])
@pytest.mark.parametrize("T,Hkv,sharpen", [(1024, 3, True), (37, 3, False), (3, 1, False)])
def test_memory_write_matches_eq4_and_eq5(rule, T, Hkv, sharpen):
    native_or_skip()
    from infinicli import memory as mem

    _, k, v, M, z = memory_case(T, 3 * Hkv, Hkv, seed=T + 1)
    scale = torch.linspace(1.0, 2.0, Hkv) if sharpen else None
    kh = k.view(1, T, Hkv, 64).transpose(1, 2).float()
    if scale is not None:
        kh = kh * scale.view(1, Hkv, 1, 1)
    vh = v.view(1, T, Hkv, 64).transpose(1, 2).float()
    ref_M, ref_z = mem.update(M, z, mem.sigma(kh), vh, rule)
    out = kernels.memory_write(k, v, scale, M, z, rule, 1e-6)
    assert out is not None
    new_M, new_z = out
    assert new_M.dtype == torch.float32 and new_M.shape == M.shape and new_z.shape == z.shape
    torch.testing.assert_close(new_M, ref_M, rtol=1e-4, atol=1e-4 * ref_M.abs().max().item())
    torch.testing.assert_close(new_z, ref_z, rtol=1e-5, atol=1e-3)
    assert kernels.memory_write(k, v, scale, M.expand(2, -1, -1, -1), z, rule, 1e-6) is None  # batch 2


def test_disabled_turns_every_kernel_off():
    native_or_skip()
    q, k, v = qkv(1, 9, 3, 64)
    with kernels.disabled():
        assert kernels.causal_attention(q, k, v) is None
        assert kernels.rms_norm(torch.ones(2, 16).bfloat16(), torch.ones(16).bfloat16(), 1e-5) is None
    assert kernels.causal_attention(q, k, v) is not None
