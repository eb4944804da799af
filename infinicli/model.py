"""A Llama-family decoder with Infini-attention retrofitted into every attention layer.

The weights are the unmodified Hugging Face checkpoint (same parameter names, so a state dict loads as is);
the retrofit adds, per layer, a gate β per query head and, optionally, LoRA adapters on the attention
projections, a memory key convolution and a memory sharpness. Inside a segment attention is causal and
local (RoPE positions restart at 0 in every segment); across segments information flows only through the
compressive memory (see memory.py for the math).

While the memory is still empty (the first segment) the layer is exactly the base model: the gate mixes in
memory only once something has been written, so nothing stored yet cannot disturb the base model.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from infinicli import kernels
from infinicli import memory as mem


@dataclass
class ModelConfig:
    vocab_size: int = 49152
    hidden_size: int = 576
    intermediate_size: int = 1536
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, cfg: dict) -> ModelConfig:
        """Build from a Hugging Face config.json dict (llama / mistral style)."""
        n_heads = cfg["num_attention_heads"]
        rope = cfg.get("rope_parameters") or {}
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            n_layers=cfg["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


@dataclass
class InfiniConfig:
    segment_len: int = 1024
    update_rule: str = "delta"  # "delta" (eq. 5) or "linear" (eq. 4)
    gate_init: float = -1.0  # β at initialisation: sigmoid(-1) = 0.27 of the output comes from memory
    lora_rank: int = 0  # 0 = no LoRA
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # "all": LoRA on the projections themselves (local attention changes too); "memory": LoRA deltas used
    # only where the memory is read, written, and mixed in, so an empty memory is exactly the base model
    lora_scope: str = "all"
    # with scope "memory": layers whose projections also get LoRA of their own on the local path (rank
    # lora_local_rank, the scale α/r of lora_rank), so what these layers' tokens carry can change too (a
    # room's token taking in the person who went there before a later layer files it in memory). The empty-
    # memory model then differs from the base model in these layers; LoRA merged into the weights at inference
    lora_local_layers: tuple[int, ...] = ()
    lora_local_rank: int = 8
    # > 0: memory keys pass through a causal depthwise convolution over the last `key_conv` positions (per
    # KV head and channel, starting as the identity), so a key can carry the tokens before it: reading then
    # finds "what came after this token", the order a linear-attention memory otherwise loses (DeltaNet's
    # short convolution). Zero-padded at the start of every segment.
    key_conv: int = 0
    # > 0: the delta-rule write of a segment goes in chunks of this many tokens (memory.update); 0: the
    # whole segment in one write, as in the paper
    write_chunk: int = 0
    # True: a sharpness per layer and KV head, s (a parameter, 0 at the start): the memory queries and keys
    # are multiplied by exp(s) before σ (InfiniAttention._mem_queries, _mem_keys). σ = ELU + 1 is not
    # homogeneous, so exp(s) > 1 concentrates the read on the keys that match best, against the dilution
    # of a needle by the filler of a long input
    mem_scale: bool = False
    # True: the gate depends on the token as well as the head, g_t = sigmoid(β + w·q_t / √d), with w [H, d]
    # a parameter per layer (0 at the start: the constant gate of eq. 6) and q_t the memory query before
    # sharpening and σ: a head can open its memory where a query asks for something written long ago (a
    # question) and close it for ordinary text, where a constant gate must trade one against the other
    gate_query: bool = False
    # True: the gate also weighs what both paths return, β_t + (v·A_mem_t + u·A_dot_t)/√d, with v, u [H, d]
    # per layer (0 at the start): a query alone cannot tell whether the answer is in memory or in the
    # segment being read; the two reads can (digits from memory, filler locally, or the other way round)
    gate_content: bool = False
    eps: float = mem.EPS

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["lora_targets"] = list(self.lora_targets)
        d["lora_local_layers"] = list(self.lora_local_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InfiniConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("lora_targets", "lora_local_layers"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


@dataclass
class Memory:
    """Compressive memory of all layers: M [L, B, Hkv, d, d], z [L, B, Hkv, d] (fp32), segments written."""

    M: torch.Tensor
    z: torch.Tensor
    segments: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int = 1, device: torch.device | str = "cpu") -> Memory:
        M, z = mem.empty_memory(cfg.n_layers, batch, cfg.n_kv_heads, cfg.head_dim, device)
        return cls(M, z, 0)

    @property
    def is_empty(self) -> bool:
        return self.segments == 0

    def nbytes(self) -> int:
        return self.M.numel() * self.M.element_size() + self.z.numel() * self.z.element_size()

    def detach(self) -> Memory:
        return Memory(self.M.detach(), self.z.detach(), self.segments)


@dataclass
class KVCache:
    """Keys and values (post-RoPE) of the current segment, per layer: [B, Hkv, T, d]."""

    k: list[torch.Tensor | None] = field(default_factory=list)
    v: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.k or self.k[0] is None else self.k[0].shape[2]


class LoRADelta(nn.Module):
    """Δy = scale · (x Aᵀ) Bᵀ, B starting at zero: a low-rank correction (alone on the memory path)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y + Δ(x), the addition fused into the second matmul (one pass over y instead of three)."""
        r = x.reshape(-1, x.shape[-1]) @ self.lora_A.to(x.dtype).t()  # [B·T, r]
        out = torch.addmm(y.reshape(-1, y.shape[-1]), r, (self.lora_B * self.scale).to(x.dtype).t())
        return out.view(y.shape)


class LoRALinear(LoRADelta):
    """y = x Wᵀ + scale · (x Aᵀ) Bᵀ, with B initialised to zero (so it starts as the base layer)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, rank, alpha)
        self.base = base

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, self.base(x))

    def merged(self) -> nn.Linear:
        """A plain Linear with the adapter folded into the weight (no cost at inference)."""
        w = self.base.weight.data.float() + self.scale * (self.lora_B.data.float() @ self.lora_A.data.float())
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=False)
        out.weight.data = w.to(self.base.weight.dtype)
        return out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, device: torch.device | str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Llama's RMSNorm: normalise in fp32, round to the input dtype, then scale (one fused kernel)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # the same math in one pass
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        y = kernels.rms_norm(x, self.weight, self.eps)  # bf16 on an AVX512-BF16 CPU: one native pass
        if y is not None:
            return y
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rope_tables(
    head_dim: int, theta: float, start: int, length: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, d] for positions start..start+length-1 (Llama's rotate-half convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = torch.arange(start, start + length, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁): one multiply and two fused multiply-adds."""
    h = x.shape[-1] // 2
    out = x * cos
    x1, x2, o1, o2 = x[..., :h], x[..., h:], out[..., :h], out[..., h:]
    if torch.is_grad_enabled() and x.requires_grad:  # autograd: no in-place writes into views
        return torch.cat((o1 - x2 * sin[..., :h], o2 + x1 * sin[..., h:]), dim=-1)
    o1.addcmul_(x2, sin[..., :h], value=-1.0)
    o2.addcmul_(x1, sin[..., h:])
    return out


class InfiniAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, icfg: InfiniConfig, device: torch.device | str | None = None):
        super().__init__()
        self.cfg, self.icfg = cfg, icfg
        C, H, Hkv, d = cfg.hidden_size, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(C, H * d, bias=False, device=device)
        self.k_proj = nn.Linear(C, Hkv * d, bias=False, device=device)
        self.v_proj = nn.Linear(C, Hkv * d, bias=False, device=device)
        self.o_proj = nn.Linear(H * d, C, bias=False, device=device)
        self.gate = nn.Parameter(torch.full((H,), float(icfg.gate_init), device=device))  # β per query head

    def forward(
        self,
        x: torch.Tensor,  # [B, T, C]
        cos: torch.Tensor,
        sin: torch.Tensor,
        M: torch.Tensor | None,  # [B, Hkv, d, d] memory of this layer, None when empty
        z: torch.Tensor | None,  # [B, Hkv, d]
        write: bool,
        kv: KVCache | None,
        layer: int,
        memory_only: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        B, T, _ = x.shape
        H, Hkv, d = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim
        if memory_only:  # the last layer while reading: its output is never used, only its memory write
            M, z = self._write(x, self.k_proj(x), self.v_proj(x), M, z)
            return None, M, z
        q_flat, k_flat, v_flat = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, T, (H|Hkv)·d]
        q = q_flat.view(B, T, H, d).transpose(1, 2)  # [B, H, T, d]   pre-RoPE
        k = k_flat.view(B, T, Hkv, d).transpose(1, 2)  # [B, Hkv, T, d] pre-RoPE
        v = v_flat.view(B, T, Hkv, d).transpose(1, 2)  # [B, Hkv, T, d]

        # local causal dot-product attention inside the segment (RoPE positions restart per segment)
        a_dot = None
        if kv is None:  # reading: the native kernel rotates q and k itself where it applies
            a_dot = kernels.causal_attention(q, k, v, cos, sin)
        if a_dot is None:
            a_dot = self._local_attention(q, k, v, cos, sin, kv, layer)
        # a_dot: [B, H, T, d]

        mem_out = None  # memory-scoped LoRA on the output projection: applied to the memory share only
        if M is None:  # empty memory: exactly the base model (eq. 6 only once memory holds something)
            out = a_dot
        else:
            out, mem_out = self._read(x, q_flat, M, z, a_dot)
        if write:  # eq. 4 / 5 with this segment's keys and values (pre-RoPE keys)
            M, z = self._write(x, k_flat, v_flat, M, z)
        out = self.o_proj(out.transpose(1, 2).reshape(B, T, H * d))
        if mem_out is not None:
            out = self.mem_o_proj(mem_out, out)
        return out, M, z

    def _local_attention(
        self,
        q: torch.Tensor,  # [B, H, T, d] pre-RoPE
        k: torch.Tensor,  # [B, Hkv, T, d] pre-RoPE
        v: torch.Tensor,  # [B, Hkv, T, d]
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """Causal attention of this segment's queries over its keys (and the cached ones): [B, H, T, d]."""
        T = q.shape[2]
        G = q.shape[1] // k.shape[1]
        qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if kv is not None:
            if kv.k[layer] is not None:
                past = kv.k[layer].shape[2]
                kr = torch.cat([kv.k[layer], kr], dim=2)
                v_all = torch.cat([kv.v[layer], v], dim=2)
            else:
                v_all = v
            kv.k[layer], kv.v[layer] = kr, v_all
        else:
            v_all = v
        if past == 0:  # a whole segment: the native bf16 kernel where it applies, else torch's
            a_dot = kernels.causal_attention(qr, kr, v_all)
            if a_dot is None:
                a_dot = F.scaled_dot_product_attention(qr, kr, v_all, is_causal=True, enable_gqa=G > 1)
        elif T == 1:
            a_dot = F.scaled_dot_product_attention(qr, kr, v_all, enable_gqa=G > 1)
        else:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
            a_dot = F.scaled_dot_product_attention(qr, kr, v_all, attn_mask=mask, enable_gqa=G > 1)
        return a_dot

    def _read(
        self, x: torch.Tensor, q_flat: torch.Tensor, M: torch.Tensor, z: torch.Tensor, a_dot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 3 and eq. 6: the gated mix [B, H, T, d] of memory read and local attention a_dot, and the
        memory share sigmoid(β)·A_mem as [B, T, H·d] when a memory-scoped output LoRA needs it (else None)."""
        B, T, _ = x.shape
        H, Hkv, d = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim
        want_mem = getattr(self, "mem_o_proj", None) is not None
        q_m = self._mem_delta("q_proj", x, q_flat)  # [B, T, H·d] before sharpening and σ
        beta = self._gate_logits(q_m)  # [H] or [B, H, T]
        content = self._gate_content()  # None or (v, u) [H, d] each
        fused = kernels.memory_read(
            q_m, self._mem_scale(H), M, z, beta, a_dot, self.icfg.eps, want_mem, content
        )
        if fused is not None:  # one native pass, written over a_dot
            return fused
        sq = mem.sigma(self._sharpened_heads(q_m, H).float())  # [B, H, T, d]
        sq = sq.reshape(B, Hkv, H // Hkv * T, d)  # the query heads of a KV head share its memory
        a_mem = mem.retrieve(sq, M, z, self.icfg.eps).view(B, H, T, d)  # eq. 3
        if content is not None:  # β_t + (v·A_mem + u·A_dot)/√d
            v, u = content
            beta = beta.view(-1, H, 1) if beta.dim() == 1 else beta
            beta = (
                beta
                + (torch.einsum("bhtd,hd->bht", a_mem, v) + torch.einsum("bhtd,hd->bht", a_dot.float(), u))
                * d**-0.5
            )
        out = mem.gate_mix(a_mem, a_dot, beta)  # eq. 6
        mem_out = None
        if want_mem:
            mem_out = (mem.gate_weights(beta) * a_mem).to(x.dtype).transpose(1, 2).reshape(B, T, H * d)
        return out, mem_out

    def _gate_content(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(v, u) [H, d] fp32 of a content gate, or None."""
        v, u = getattr(self, "gate_mem", None), getattr(self, "gate_loc", None)
        return None if v is None or u is None else (v.float(), u.float())

    def _gate_logits(self, q_m: torch.Tensor) -> torch.Tensor:
        """The gate's logits: β [H], or with a query gate β + w·q_t/√d per token, [B, H, T] fp32."""
        w = getattr(self, "gate_q", None)  # [H, d]
        if w is None:
            return self.gate
        B, T, _ = q_m.shape
        H, d = w.shape
        qw = torch.einsum("bthd,hd->bht", q_m.view(B, T, H, d).float(), w.float())  # [B, H, T]
        return self.gate.float().view(1, H, 1) + qw * d**-0.5

    def _write(
        self,
        x: torch.Tensor,
        k_flat: torch.Tensor,
        v_flat: torch.Tensor,
        M: torch.Tensor | None,
        z: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4 / 5: the memory (M, z) after writing this segment's keys and values (pre-RoPE keys)."""
        B, T, _ = x.shape
        Hkv, d = self.cfg.n_kv_heads, self.cfg.head_dim
        k_m = self._mem_keys_flat(x, k_flat)  # [B, T, Hkv·d] before sharpening and σ
        v_m = self._mem_delta("v_proj", x, v_flat)  # [B, T, Hkv·d]
        if M is None:
            M = torch.zeros(B, Hkv, d, d, dtype=torch.float32, device=x.device)
            z = torch.zeros(B, Hkv, d, dtype=torch.float32, device=x.device)
        rule, eps, chunk = self.icfg.update_rule, self.icfg.eps, self.icfg.write_chunk
        fused = kernels.memory_write(k_m, v_m, self._mem_scale(Hkv), M, z, rule, eps, chunk)
        if fused is not None:  # one native pass per chunk
            return fused
        sk = mem.sigma(self._sharpened_heads(k_m, Hkv).float())  # [B, Hkv, T, d]
        vf = v_m.view(B, T, Hkv, d).transpose(1, 2).float()
        return mem.update(M, z, sk, vf, rule, eps, chunk)

    def _mem_delta(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y plus the memory-scoped LoRA correction of projection `name`, when there is one."""
        delta = getattr(self, "mem_" + name, None)
        return y if delta is None else delta(x, y)

    def _mem_scale(self, n_heads: int) -> torch.Tensor | None:
        """exp(s) per head, [n_heads] (query heads share their KV head's); None without mem_scale."""
        s = getattr(self, "mem_scale", None)  # [Hkv]
        if s is None:
            return None
        return s.float().exp().repeat_interleave(n_heads // s.shape[0])

    def _sharpened_heads(self, flat: torch.Tensor, n_heads: int) -> torch.Tensor:
        """[B, T, n·d] memory queries or keys → [B, n, T, d], times exp(s) when there is a sharpness."""
        B, T, _ = flat.shape
        h = flat.view(B, T, n_heads, self.cfg.head_dim).transpose(1, 2)
        a = self._mem_scale(n_heads)
        return h if a is None else h * a.view(n_heads, 1, 1).to(h.dtype)

    def _mem_queries(self, x: torch.Tensor, q_flat: torch.Tensor) -> torch.Tensor:
        """Memory queries [B, H, T, d] (pre-σ): the query projection with its memory delta, sharpened."""
        return self._sharpened_heads(self._mem_delta("q_proj", x, q_flat), self.cfg.n_heads)

    def _mem_keys(self, x: torch.Tensor, k_flat: torch.Tensor) -> torch.Tensor:
        """Memory keys [B, Hkv, T, d] (pre-σ): _mem_keys_flat's, sharpened."""
        return self._sharpened_heads(self._mem_keys_flat(x, k_flat), self.cfg.n_kv_heads)

    def _mem_keys_flat(self, x: torch.Tensor, k_flat: torch.Tensor) -> torch.Tensor:
        """Memory keys [B, T, Hkv·d] before sharpening and σ: the key projection with its memory delta, then
        the causal key convolution when there is one: k'_t = Σ_j w_j ⊙ k_{t-K+1+j} (zero before the segment
        start). The sharpening exp(s) multiplies them where they are read (_write, the native kernel)."""
        T = x.shape[1]
        k = self._mem_delta("k_proj", x, k_flat)  # [B, T, Hkv·d]
        w = getattr(self, "mem_k_conv", None)  # [Hkv, d, K], w[..., K-1] weighs the current position
        if w is not None:
            K = w.shape[-1]
            w = w.to(k.dtype).reshape(-1, K)  # [Hkv·d, K], the channels in k's order
            kp = F.pad(k, (0, 0, K - 1, 0))  # [B, K-1+T, Hkv·d]: zeros before the segment start
            k = kp[:, K - 1 :] * w[:, K - 1]
            for j in range(K - 1):
                k = k + kp[:, j : j + T] * w[:, j]
        return k


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None):
        super().__init__()
        C, F_ = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(C, F_, bias=False, device=device)
        self.up_proj = nn.Linear(C, F_, bias=False, device=device)
        self.down_proj = nn.Linear(F_, C, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        g, u = self.gate_proj(x), self.up_proj(x)
        h = kernels.silu_mul_(g, u)  # one native pass where it applies
        return self.down_proj(h if h is not None else F.silu(g, inplace=True).mul_(u))  # no copies


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, icfg: InfiniConfig, device: torch.device | str | None = None):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device)
        self.self_attn = InfiniAttention(cfg, icfg, device)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device)
        self.mlp = MLP(cfg, device)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, icfg: InfiniConfig, device: torch.device | str | None = None):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, device=device)
        self.layers = nn.ModuleList(Block(cfg, icfg, device) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device)


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Skip nn.Linear / nn.Embedding random initialisation while a model is built on the meta device: its
    weights are assigned right after, and the first random op on a meta tensor alone costs over a second
    (it loads torch's meta kernels), which a follow-up question would pay on every start."""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


def parse_sharpen(spec: str, n_layers: int) -> tuple[list[int], float]:
    """A sharpening spec "LAYERS=A" ("22,23=2") → ([22, 23], 2.0); ValueError when malformed."""
    layers_s, sep, a_s = spec.partition("=")
    try:
        factor = float(a_s)
        layers = sorted({int(x) for x in layers_s.split(",") if x.strip()})
    except ValueError:
        layers, factor = [], 0.0
    if not sep or not factor > 0 or not layers or not all(0 <= i < n_layers for i in layers):
        raise ValueError(f"{spec!r}: use LAYERS=A with layers 0-{n_layers - 1} and A > 0, e.g. 22,23=2")
    return layers, factor


# the gates and the sharpness: kept in fp32, trained at the gates' own rate without weight decay
GATE_KEYS = (".gate", ".gate_q", ".gate_mem", ".gate_loc", ".mem_scale")


def is_adapter_key(name: str) -> bool:
    """Parameters of the retrofit (an adapter file's tensors), as opposed to the base model's weights."""
    return name.endswith((*GATE_KEYS, ".mem_k_conv")) or ".lora_" in name


class InfiniLlama(nn.Module):
    """Llama with Infini-attention. Parameter names follow transformers' LlamaForCausalLM."""

    def __init__(
        self, cfg: ModelConfig, icfg: InfiniConfig | None = None, device: torch.device | str | None = None
    ):
        super().__init__()
        self.cfg, self.icfg = cfg, icfg or InfiniConfig()
        meta = device is not None and torch.device(device).type == "meta"
        with _no_random_init() if meta else contextlib.nullcontext():
            self.model = Decoder(cfg, self.icfg, device)
            self.lm_head = (
                None
                if cfg.tie_word_embeddings
                else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, device=device)
            )

    # -- parameters of the retrofit -----------------------------------------------------------------
    def add_lora(self) -> None:
        """Wrap the attention projections named in icfg.lora_targets with LoRA adapters: memory-scoped
        deltas (scope "memory"), plus local LoRA in icfg.lora_local_layers; or LoRA everywhere ("all")."""
        ic = self.icfg
        r = ic.lora_rank
        if r <= 0:
            return
        if ic.lora_scope not in ("all", "memory"):
            raise ValueError(f"lora_scope {ic.lora_scope!r}: use 'all' or 'memory'")
        local = set(ic.lora_local_layers)
        if local and (ic.lora_scope != "memory" or ic.lora_local_rank <= 0):
            raise ValueError("lora_local_layers needs lora_scope 'memory' and lora_local_rank > 0")
        if not local <= set(range(self.cfg.n_layers)):
            raise ValueError(f"lora_local_layers {sorted(local)}: the model has {self.cfg.n_layers} layers")
        for i, block in enumerate(self.model.layers):
            for name in ic.lora_targets:
                lin = getattr(block.self_attn, name)
                if ic.lora_scope == "memory":
                    if getattr(block.self_attn, "mem_" + name, None) is None:
                        delta = LoRADelta(lin.in_features, lin.out_features, r, ic.lora_alpha)
                        setattr(block.self_attn, "mem_" + name, delta)
                    if i in local and not isinstance(lin, LoRALinear):  # at the scale α/r of the deltas
                        rl = ic.lora_local_rank
                        setattr(block.self_attn, name, LoRALinear(lin, rl, ic.lora_alpha * rl / r))
                elif not isinstance(lin, LoRALinear):
                    setattr(block.self_attn, name, LoRALinear(lin, r, ic.lora_alpha))

    def add_key_conv(self) -> None:
        """Give every layer its memory key convolution (icfg.key_conv taps), starting as the identity."""
        K = self.icfg.key_conv
        if K <= 0:
            return
        for block in self.model.layers:
            att = block.self_attn
            if getattr(att, "mem_k_conv", None) is None:
                w = torch.zeros(self.cfg.n_kv_heads, self.cfg.head_dim, K, device=att.gate.device)
                w[..., K - 1] = 1.0
                att.mem_k_conv = nn.Parameter(w)

    def add_mem_scale(self) -> None:
        """Give every layer its memory sharpness s per KV head (icfg.mem_scale), at 0 (exp(s) = 1)."""
        if not self.icfg.mem_scale:
            return
        for block in self.model.layers:
            att = block.self_attn
            if getattr(att, "mem_scale", None) is None:
                att.mem_scale = nn.Parameter(torch.zeros(self.cfg.n_kv_heads, device=att.gate.device))

    def add_gate_query(self) -> None:
        """Give every layer its query gate w [H, d] (icfg.gate_query), at 0 (the constant gate β)."""
        if self.icfg.gate_query:
            self._add_head_vectors("gate_q")

    def add_gate_content(self) -> None:
        """Give every layer its content gate v, u [H, d] (icfg.gate_content), at 0 (no change)."""
        if self.icfg.gate_content:
            self._add_head_vectors("gate_mem", "gate_loc")

    def _add_head_vectors(self, *names: str) -> None:
        """Zero parameters [H, d] under `names` in every attention layer that lacks them."""
        for blk in self.model.layers:
            att = blk.self_attn
            for name in names:
                if getattr(att, name, None) is None:
                    shape = (self.cfg.n_heads, self.cfg.head_dim)
                    setattr(att, name, nn.Parameter(torch.zeros(shape, device=att.gate.device)))

    def sharpen(self, layers: list[int], factor: float) -> None:
        """Set the memory sharpness of `layers` to s = ln(factor) in every KV head (needs icfg.mem_scale)."""
        for i in layers:
            self.model.layers[i].self_attn.mem_scale.data.fill_(math.log(factor))

    def merge_lora(self) -> None:
        """Fold LoRA adapters into the base weights (inference). Memory-scoped deltas stay separate."""
        for block in self.model.layers:
            for name in self.icfg.lora_targets:
                lin = getattr(block.self_attn, name)
                if isinstance(lin, LoRALinear):
                    setattr(block.self_attn, name, lin.merged())

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The extra parameters: gates, LoRA, key convolutions, sharpness (what an adapter file holds)."""
        return {k: v.detach().float().contiguous() for k, v in self.state_dict().items() if is_adapter_key(k)}

    def base_state_dict_keys(self) -> list[str]:
        return [k for k in self.state_dict() if not is_adapter_key(k)]

    # -- forward ------------------------------------------------------------------------------------
    def head(self, h: torch.Tensor) -> torch.Tensor:
        w = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return h @ w.t().to(h.dtype)

    def forward_segment(
        self,
        ids: torch.Tensor,  # [B, T] token ids of one segment (or the next tokens of the final segment)
        memory: Memory,
        *,
        write: bool = True,
        logits: str | None = "all",  # "all" | "last" | None (no LM head: reading only)
        kv: KVCache | None = None,
        hidden: bool = False,
    ) -> tuple[torch.Tensor | None, Memory]:
        """Run one segment. Reads memory (eq. 3) before writing it (eq. 4/5) when write=True.

        With a KV cache the positions continue from the cached length (decoding inside the final segment).
        Returns (logits [B, T or 1, V] or final hidden states when hidden=True or None, new memory).
        """
        if kv is not None and not kv.k:
            kv.k = [None] * self.cfg.n_layers
            kv.v = [None] * self.cfg.n_layers
        reading = write and logits is None and not hidden and kv is None  # only the memory is wanted
        x, memory = self.forward_layers(
            self.model.embed_tokens(ids), memory, 0, self.cfg.n_layers, write=write, kv=kv, output=not reading
        )
        if logits is None and not hidden:
            return None, memory
        if logits == "last":
            x = x[:, -1:]
        h = self.model.norm(x)
        return (h if hidden else self.head(h)), memory

    def forward_layers(
        self,
        x: torch.Tensor,  # [B, T, C] hidden states entering layer `start` (the embeddings when start = 0)
        memory: Memory,  # memory of layers start..stop-1 only: M [stop-start, B, Hkv, d, d]
        start: int,
        stop: int,
        *,
        write: bool = True,
        kv: KVCache | None = None,
        output: bool = True,
    ) -> tuple[torch.Tensor, Memory]:
        """Layers [start, stop) of one segment → (hidden states leaving layer stop-1, their new memory).

        Training splits a segment here: frozen lower layers run without autograd, the trained upper ones under
        activation checkpointing. output=False: the caller wants only the memory, so the last layer of the
        range writes its memory without computing its output (x is then returned as it entered that layer).
        """
        T = x.shape[1]
        past = kv.length if kv is not None else 0
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.rope_theta, past, T, x.device, x.dtype)
        new_M, new_z = [], []
        for i in range(start, stop):
            block = self.model.layers[i]
            Mi = None if memory.is_empty else memory.M[i - start]
            zi = None if memory.is_empty else memory.z[i - start]
            skip = not output and i == stop - 1  # nothing reads this layer's output: write its memory only
            a, Mi, zi = block.self_attn(block.input_layernorm(x), cos, sin, Mi, zi, write, kv, i, skip)
            if not skip:
                if torch.is_grad_enabled():
                    x = x + a
                    x = x + block.mlp(block.post_attention_layernorm(x))
                else:  # inference: residual adds in place (x is this forward's own tensor)
                    x.add_(a)
                    x.add_(block.mlp(block.post_attention_layernorm(x)))
            if write:
                new_M.append(Mi)
                new_z.append(zi)
        if write:
            memory = Memory(torch.stack(new_M), torch.stack(new_z), memory.segments + 1)
        return x, memory

    def empty_memory(self, batch: int = 1) -> Memory:
        return Memory.empty(self.cfg, batch, self.model.embed_tokens.weight.device)


def load_config(model_dir: Path) -> ModelConfig:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return ModelConfig.from_hf(cfg)
