"""Compressive-memory math of Infini-attention (Munkhdalai et al. 2024, arXiv 2404.07143, section 2.1.2).

Pure tensor functions, no model and no segment loop. Per layer and KV head the memory is a matrix
M (d x d) and a normalisation vector z (d), always kept in fp32.

    σ(x) = ELU(x) + 1                                              (nonlinearity, after Katharopoulos et al.)
    A_mem = σ(Q) M_{s-1} / (σ(Q) z_{s-1})                          (eq. 3)  retrieval, before the update
    M_s = M_{s-1} + σ(K)ᵀ V,             z_s = z_{s-1} + Σ_t σ(K_t)  (eq. 4)  linear update
    M_s = M_{s-1} + σ(K)ᵀ (V − σ(K) M_{s-1} / (σ(K) z_{s-1}))        (eq. 5)  delta-rule update
    A = sigmoid(β) ⊙ A_mem + (1 − sigmoid(β)) ⊙ A_dot              (eq. 6)  per-head gate
        (optionally per token, β_t = β + w·q_t/√d: model.InfiniConfig.gate_query; not in the paper)

Shapes: B batch, H KV heads, T tokens of the segment, d head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6
CLOSED_GATE = -1e4  # a β with sigmoid(β) == 0 exactly in fp32: eq. 6 then gives local attention only


def sigma(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = ELU(x) + 1, positive everywhere."""
    return F.elu(x) + 1.0


def retrieve(sq: torch.Tensor, M: torch.Tensor, z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. 3: A_mem = σ(Q) M / (σ(Q) z + ε).

    sq: [B, H, N, d] σ(Q) in fp32 (N may hold several query heads of one KV head),
    M: [B, H, d, d], z: [B, H, d].
    Returns [B, H, N, d] fp32. An empty memory (M = 0, z = 0) reads as zeros.
    """
    num = sq @ M  # [B, H, N, d]
    den = (sq @ z.unsqueeze(-1)) + eps  # [B, H, N, 1]
    return num / den


def update_linear(
    M: torch.Tensor, z: torch.Tensor, sk: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4: M += σ(K)ᵀ V; z += Σ_t σ(K_t).  sk, v: [B, H, T, d] fp32."""
    return M + sk.transpose(-2, -1) @ v, z + sk.sum(dim=-2)


def update_delta(
    M: torch.Tensor, z: torch.Tensor, sk: torch.Tensor, v: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: M += σ(K)ᵀ (V − σ(K) M / (σ(K) z + ε)); z += Σ_t σ(K_t).

    Only the part of V that the memory cannot already retrieve for key K is written, so writing the same
    (K, V) twice leaves M unchanged the second time (up to ε).
    """
    v_old = retrieve(sk, M, z, eps)  # [B, H, T, d]
    return M + sk.transpose(-2, -1) @ (v - v_old), z + sk.sum(dim=-2)


def update(
    M: torch.Tensor,
    z: torch.Tensor,
    sk: torch.Tensor,
    v: torch.Tensor,
    rule: str = "delta",
    eps: float = EPS,
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on the update rule ("delta" or "linear").

    chunk > 0 (delta rule): the segment's tokens are written in consecutive chunks of that many tokens, each
    chunk's eq. 5 reading the memory the chunks before it left, as if the segment were that many shorter
    segments for the write (the reads of this segment still see M_{s-1}). So a segment written into an
    empty memory keeps only what its later chunks add to its earlier ones, as later segments do.
    """
    if rule == "delta":
        T = sk.shape[-2]
        step = chunk if 0 < chunk < T else T  # one chunk: the paper's single write
        for t in range(0, T, step):
            M, z = update_delta(M, z, sk[..., t : t + step, :], v[..., t : t + step, :], eps)
        return M, z
    if rule == "linear":  # a sum: chunks change nothing
        return update_linear(M, z, sk, v)
    raise ValueError(f"unknown memory update rule {rule!r} (use 'delta' or 'linear')")


def gate_weights(beta: torch.Tensor) -> torch.Tensor:
    """sigmoid(β) to multiply [B, Hq, T, d]: [1, Hq, 1, 1] from β [Hq], [B, Hq, T, 1] from [B, Hq, T]."""
    g = torch.sigmoid(beta)
    return g.view(1, -1, 1, 1) if g.dim() == 1 else g.unsqueeze(-1)


def gate_mix(a_mem: torch.Tensor, a_dot: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eq. 6: sigmoid(β)·A_mem + (1 − sigmoid(β))·A_dot.  a_*: [B, Hq, T, d], beta: [Hq] (one gate per head)
    or [B, Hq, T] (per token: model.InfiniConfig.gate_query)."""
    g = gate_weights(beta).to(a_dot.dtype)
    return torch.lerp(a_dot, a_mem.to(a_dot.dtype), g)  # a_dot + g·(a_mem − a_dot), one pass


def empty_memory(
    n_layers: int, batch: int, n_kv_heads: int, head_dim: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero memory for all layers: M [L, B, H, d, d], z [L, B, H, d] (fp32)."""
    M = torch.zeros(n_layers, batch, n_kv_heads, head_dim, head_dim, dtype=torch.float32, device=device)
    z = torch.zeros(n_layers, batch, n_kv_heads, head_dim, dtype=torch.float32, device=device)
    return M, z
