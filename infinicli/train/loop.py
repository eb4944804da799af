"""The training loop: segments unrolled with the memory carried (never detached), one optimizer per run.

Per sample the segments are run in order, each reading the memory (eq. 3), mixing it with local attention
through the gate (eq. 6) and writing it (eq. 4/5); the final segment only reads. Gradients flow from the
answer back through every memory update to the first segment (full backpropagation through memory); each
segment is wrapped in activation checkpointing (its memory tensors are inputs and outputs), so activations
are kept for one segment at a time and only the memory states (L·H·d·(d+1) floats per segment) accumulate.

Loss = answer · CE(answer tokens of the final segment)
     + lm · CE(next token, every segment and the tail of LM samples)
     + distill · KL(base ‖ model) on short chat turns (the model's memory empty, or with
       loss.distill_memory the memory its QA sample left: unrelated text must not change local answers),
     + read · −log(share of the memory read at the answer position that falls on the sentences answering
       the question, in each of loss.read_layers; `read_loss`), when the samples name those sentences,
where "base" is the same network with its LoRA switched off (with empty memory the gates are idle, so that is
exactly the original model; with full training of the projections, a frozen copy of the original).

Precision: with run.bf16 the frozen base weights are bf16 (as at inference on bf16 hardware) and the trained
parameters (gates, LoRA) stay fp32; the memory math runs in fp32 as in memory.py. Training the projections
themselves (model.train = "full") keeps fp32 master weights under bf16 autocast. run.bf16 applies where bf16
pays (CUDA, or a CPU with AVX512-BF16 / AMX); a CPU without native bf16 (AVX2 only) trains in fp32, since
emulated bf16 matmuls there run several times slower than fp32 ones.

Parallelism: one process per device; under torchrun the model is wrapped in DistributedDataParallel (gloo
on CPU, nccl on CUDA), every rank draws different samples (seeded by rank), only rank 0 writes files.

Checkpoints (run folder, resumable): checkpoint.safetensors holds the trained tensors and the flattened
AdamW state, with the step, config and bookkeeping as JSON metadata (no pickle anywhere); samples are a pure
function of (seed, rank, step), so a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from infinicli import memory as mem
from infinicli.model import GATE_KEYS, InfiniLlama, LoRADelta, Memory, is_adapter_key, parse_sharpen
from infinicli.train.config import CONFIG_NAME, ConfigError, OptimSection, TrainConfig
from infinicli.train.data import IGNORE, Batch, DistillPool, SampleFactory, segments_for_step

CHECKPOINT = "checkpoint.safetensors"
ADAPTER = "adapter.safetensors"
METRICS = "metrics.jsonl"
DISTILL = "distill_pool.json"


@dataclass
class Progress:
    """One optimizer step, as reported to the progress callback (averaged over ranks)."""

    step: int
    steps: int
    loss: float
    answer_loss: float | None  # CE per answer token (None: no QA sample this step)
    lm_loss: float | None  # CE per text token of LM samples
    kl: float | None  # KL(base ‖ model) per token
    acc: float | None  # exact answers (argmax over every answer token) among this step's QA samples
    acc_avg: float | None  # the same over the last 50 steps
    token_acc: float | None  # answer tokens right
    segments: float  # mean segments in memory per sample this step
    tokens: int  # tokens processed this step (all ranks)
    tokens_seen: int  # since the start of the run
    tokens_per_s: float
    lr: float
    gate_lr: float
    gate: float  # mean sigmoid(β): the share of attention output taken from memory
    grad_norm: float
    elapsed_s: float
    read: float | None = None  # the read loss (loss.read) per row and read layer, when it is on


# -- the objective ----------------------------------------------------------------------------------


def _ce(model: InfiniLlama, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per sample: CE sum, labelled tokens and wrong argmax tokens at the labelled positions. h: [B, T, C]."""
    sel = labels != IGNORE
    rows = sel.nonzero()[:, 0]
    target = labels[sel]
    logits = model.head(h[sel]).float()
    ce = F.cross_entropy(logits, target, reduction="none")
    wrong = (logits.argmax(-1) != target).float()
    zeros = torch.zeros(labels.shape[0], device=h.device)
    return (
        zeros.index_add(0, rows, ce),
        zeros.index_add(0, rows, torch.ones_like(ce)),
        zeros.index_add(0, rows, wrong),
    )


@contextlib.contextmanager
def _attention_inputs(model: InfiniLlama, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """While a forward runs: the input [B, T, C] of each `layers` attention (after the layer's norm)."""
    got: dict[int, torch.Tensor] = {}

    def keep(i: int) -> Callable:
        return lambda mod, args: got.__setitem__(i, args[0])

    hooks = [model.model.layers[i].self_attn.register_forward_pre_hook(keep(i)) for i in layers]
    try:
        yield got
    finally:
        for h in hooks:
            h.remove()


def _support_keys(
    model: InfiniLlama, got: dict[int, torch.Tensor], layers: Sequence[int], support: torch.Tensor, owner
) -> torch.Tensor:
    """Σ_t support[..., r, t]·σ(k_t) of this segment's memory keys in each read layer: the part of eq. 4's z
    that the answering sentences add, [len(layers), ..., R, Hkv, d] fp32. support [..., R, T] (a leading
    dimension: several masks at once, e.g. the answering sentences and all facts); owner [R] (None: R = B)."""
    out = []
    for i in layers:
        att, x = model.model.layers[i].self_attn, got[i]
        sk = mem.sigma(att._mem_keys(x, att.k_proj(x)).float())  # [B, Hkv, T, d], as _write makes them
        sk = sk if owner is None else sk[owner]
        out.append(torch.einsum("rhtd,...rt->...rhd", sk, support.float()))
    return torch.stack(out)


def _segment(
    model: InfiniLlama,
    index: int,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    M: torch.Tensor,
    z: torch.Tensor,
    start: int,
    support: torch.Tensor | None = None,
    owner: torch.Tensor | None = None,
    layers: tuple[int, ...] = (),
) -> tuple[torch.Tensor, ...]:
    """Write segment `index` to the memory of layers start.. (memory tensors in and out, for checkpointing);
    x [B, T, C]: the hidden states entering layer `start`. LM loss if labelled. With a support mask [R, T]
    (and read layers), also the answering sentences' share of z (`_support_keys`); else an empty tensor."""
    L = model.cfg.n_layers
    with _attention_inputs(model, layers if support is not None else ()) as got:
        if labels is None:
            _, new = model.forward_layers(x, Memory(M, z, index), start, L, write=True, output=False)
            ce = count = M.new_zeros(x.shape[0])
        else:
            h, new = model.forward_layers(x, Memory(M, z, index), start, L, write=True)
            ce, count, _ = _ce(model, model.model.norm(h), labels)
    zt = M.new_zeros(0) if support is None else _support_keys(model, got, layers, support, owner)
    return ce, count, new.M, new.z, zt


def _final(
    model: InfiniLlama,
    index: int,
    x: torch.Tensor,
    labels: torch.Tensor,
    M: torch.Tensor,
    z: torch.Tensor,
    start: int,
    layers: tuple[int, ...] = (),
) -> tuple[torch.Tensor, ...]:
    """The final segment from layer `start` on: reads the memory of `index` segments (no write); loss on the
    labelled positions. With read layers, also σ(q) of the memory queries at each row's answer position (the
    first labelled one), [len(layers), R, H, d] fp32 (else an empty tensor)."""
    with _attention_inputs(model, layers) as got:
        h, _ = model.forward_layers(x, Memory(M, z, index), start, model.cfg.n_layers, write=False)
    ce, count, wrong = _ce(model, model.model.norm(h), labels)
    sq = M.new_zeros(0)
    if layers:
        pos = (labels != IGNORE).float().argmax(-1)  # [R]
        rows = torch.arange(labels.shape[0], device=labels.device)
        qs = []
        for i in layers:
            att, xi = model.model.layers[i].self_attn, got[i][rows, pos][:, None]  # [R, 1, C]
            qs.append(mem.sigma(att._mem_queries(xi, att.q_proj(xi))[:, :, 0].float()))  # [R, H, d]
        sq = torch.stack(qs)
    return ce, count, wrong, sq


def read_loss(
    sq: torch.Tensor, zt: torch.Tensor, z: torch.Tensor, heads: str = "mean", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """The read loss of `loss.read`: −log of the share σ(q)·z_support / σ(q)·z of the memory read (eq. 3's
    weights summed over the answering sentences), per row and read layer, of the query heads' mean share
    (heads="mean") or of the largest (heads="max": the gradient reaches only the head that reads them most).

    sq [L', R, H, d] queries at the answer positions, zt [L', R, Hkv, d] the answering sentences' keys, z
    [L', R, Hkv, d] the whole memory's (loss.read_against "memory") or only the facts' ("facts", which hold
    the answering sentences). Returns (sum over rows with support and layers, their count)."""
    G = sq.shape[2] // z.shape[2]
    zt, z = zt.repeat_interleave(G, dim=2), z.repeat_interleave(G, dim=2)  # [L', R, H, d]
    share = (sq * zt).sum(-1) / ((sq * z).sum(-1) + eps)  # [L', R, H]
    pooled = share.mean(-1) if heads == "mean" else share.amax(-1)  # [L', R]
    nll = -torch.log(pooled.clamp(eps, 1.0))
    has = (zt.sum((-1, -2)) > 0).to(nll.dtype)
    return (nll * has).sum(), has.sum()


@torch.no_grad()
def _frozen(
    model: InfiniLlama,
    index: int,
    ids: torch.Tensor,
    M: torch.Tensor,
    z: torch.Tensor,
    stop: int,
    write: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layers below `stop` (nothing there trains): no autograd graph, no recomputation in the backward pass.
    → (hidden states entering layer `stop`, their new memory M, z)."""
    x = model.model.embed_tokens(ids)
    if stop == 0:  # nothing frozen
        return x, M, z
    x, new = model.forward_layers(x, Memory(M, z, index), 0, stop, write=write)  # write=False: M, z as given
    return x, new.M, new.z


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model: every LoRA adapter scaled to 0 for the duration."""
    mods = [m for m in model.modules() if isinstance(m, LoRADelta)]  # LoRALinear is one too
    scales = [m.scale for m in mods]
    for m in mods:
        m.scale = 0.0
    try:
        yield
    finally:
        for m, s in zip(mods, scales, strict=True):
            m.scale = s


class Objective(nn.Module):
    """The whole loss of one forward (a QA/LM batch plus an optional distillation batch), as one module so
    that DistributedDataParallel can wrap it."""

    def __init__(self, model: InfiniLlama, cfg: TrainConfig, base: InfiniLlama | None = None):
        super().__init__()
        self.model = model
        self._base = [base]  # frozen copy of the original (full training), kept out of the module tree
        self.cfg = cfg
        if cfg.loss.read > 0 and not all(0 <= i < model.cfg.n_layers for i in cfg.loss.read_layers):
            n_layers = model.cfg.n_layers
            raise ConfigError(f"loss.read_layers = {cfg.loss.read_layers}: the model has {n_layers} layers")

    def forward(
        self,
        batch: Batch,
        distill: tuple[torch.Tensor, torch.Tensor] | None = None,
        grad_checkpoint: bool | None = None,
        detach_memory: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model, w = self.model, self.cfg.loss
        ckpt = self.cfg.run.grad_checkpoint if grad_checkpoint is None else grad_checkpoint
        B, n, _ = batch.segments.shape
        memory = model.empty_memory(B)
        N = self.cfg.model.train_from_layer  # layers below N are frozen: they run without autograd
        M_lo, z_lo, M, z = memory.M[:N], memory.z[:N], memory.M[N:], memory.z[N:]
        lm_sum, lm_cnt = M.new_zeros(()), M.new_zeros(())
        supported = batch.support if w.read > 0 else None  # [R, n, S]: the rows of loss.read_kinds only
        keep = [k in w.read_kinds for k in batch.row_kinds]
        if supported is not None and not all(keep):
            mask = torch.tensor(keep, dtype=supported.dtype, device=supported.device)
            supported = supported * mask[:, None, None] if any(keep) else None
        if supported is not None and w.read_against == "facts":
            supported = torch.stack([supported, batch.facts])  # [2, R, n, S]: the answer's, all facts'
        layers = tuple(w.read_layers) if supported is not None else ()
        # the answering sentences' part of z per final row: [L', R, Hkv, d] ("facts": [L', 2, R, Hkv, d])
        zt = None
        for j in range(n):
            labels = None if batch.segment_labels is None else batch.segment_labels[:, j]
            x, M_lo, z_lo = _frozen(model, j, batch.segments[:, j], M_lo, z_lo, N, write=True)
            support = supported[..., j, :] if layers else None
            args = (model, j, x, labels, M, z, N, support, batch.owner, layers)
            out = checkpoint(_segment, *args, use_reentrant=False) if ckpt else _segment(*args)
            ce, count, M, z, zt_j = out
            if detach_memory:  # for tests only: training as it would be with the memory cut between segments
                M, z = M.detach(), z.detach()
            lm_sum, lm_cnt = lm_sum + ce.sum(), lm_cnt + count.sum()
            if layers:
                zt = zt_j if zt is None else zt + zt_j
        # final rows: each sample's final segment, then its further questions (batch.owner: whose memory)
        Mf, zf, Mf_lo, zf_lo = M, z, M_lo, z_lo
        if batch.owner is not None:
            Mf, zf, Mf_lo, zf_lo = (t[:, batch.owner] for t in (M, z, M_lo, z_lo))
        x, _, _ = _frozen(model, n, batch.final, Mf_lo, zf_lo, N, write=False)
        args = (model, n, x, batch.labels, Mf, zf, N, layers if n > 0 else ())
        ce, count, wrong, sq = checkpoint(_final, *args, use_reentrant=False) if ckpt else _final(*args)
        qa = torch.tensor([k != "lm" for k in batch.row_kinds], device=ce.device, dtype=ce.dtype)
        ans_sum, ans_cnt = (ce * qa).sum(), (count * qa).sum()
        lm_sum, lm_cnt = lm_sum + (ce * (1 - qa)).sum(), lm_cnt + (count * (1 - qa)).sum()
        loss = M.new_zeros(())
        if ans_cnt > 0:
            loss = loss + w.answer * ans_sum / ans_cnt
        if lm_cnt > 0:
            loss = loss + w.lm * lm_sum / lm_cnt
        read_sum, read_n = M.new_zeros(()), M.new_zeros(())
        if layers and n > 0:
            if w.read_against == "facts":  # the share of the facts' part of the read
                zt, z_read = zt[:, 0], zt[:, 1]
            else:  # the share of the whole read: the read layers' z
                z_read = zf[torch.tensor([i - N for i in layers], device=zf.device)]
            read_sum, read_n = read_loss(sq, zt, z_read, w.read_heads)
            if read_n > 0:
                loss = loss + w.read * read_sum / read_n
        stats = {
            "ans_sum": ans_sum.detach(),
            "ans_cnt": ans_cnt,
            "lm_sum": lm_sum.detach(),
            "lm_cnt": lm_cnt,
            "exact": (((wrong == 0) & (count > 0)).float() * qa).sum(),
            "qa": qa.sum(),
            "tok_right": ((count - wrong) * qa).sum(),
            "segments": M.new_tensor(float(n * B)),
            "samples": M.new_tensor(float(B)),
            "kl_sum": M.new_zeros(()),
            "kl_n": M.new_zeros(()),
            "read_sum": read_sum.detach(),
            "read_n": read_n,
        }
        if distill is not None:
            mem = None
            if w.distill_memory and n > 0:  # the sample's memory, its first item for every chat input
                Bd = distill[0].shape[0]
                Mx, zx = torch.cat([M_lo, M])[:, :1], torch.cat([z_lo, z])[:, :1]
                mem = Memory(Mx.expand(-1, Bd, -1, -1, -1), zx.expand(-1, Bd, -1, -1), n)
            kl = self.kl(*distill, memory=mem)
            stats["kl_sum"], stats["kl_n"] = kl.detach(), M.new_ones(())
            loss = loss + w.distill * kl
        return loss, stats

    def kl(self, ids: torch.Tensor, mask: torch.Tensor, memory: Memory | None = None) -> torch.Tensor:
        """KL(base ‖ model) per token: the base model reads `ids` with an empty memory, the model with
        `memory` (None: empty too, and then only LoRA of scope "all" can make them differ)."""
        model, base = self.model, self._base[0]
        with torch.no_grad():
            ref_model = base if base is not None else model
            ctx = lora_disabled(model) if base is None else contextlib.nullcontext()
            with ctx:
                hb, _ = ref_model.forward_segment(
                    ids, ref_model.empty_memory(ids.shape[0]), write=False, hidden=True
                )
                ref = ref_model.head(hb[mask]).float().log_softmax(-1)
        memory = model.empty_memory(ids.shape[0]) if memory is None else memory
        h, _ = model.forward_segment(ids, memory, write=False, hidden=True)
        logp = model.head(h[mask]).float().log_softmax(-1)
        return F.kl_div(logp, ref, log_target=True, reduction="batchmean")


# -- setup ------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_setting: str) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device_setting.startswith("cuda") or (
        device_setting in ("", "auto") and torch.cuda.is_available()
    )
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"run.device = {device_setting}: no CUDA device is available")
    if want_cuda:
        device = torch.device(
            f"cuda:{local}" if world > 1 or device_setting in ("", "auto", "cuda") else device_setting
        )
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if world > 1:
        return Dist(dist.get_rank(), dist.get_world_size(), local), device
    return Dist(), device


def trainable_parameters(model: InfiniLlama, mode: str, from_layer: int = 0) -> tuple[list, list]:
    """(gates, others) as lists of (name, parameter); sets requires_grad accordingly. Parameters of layers
    below `from_layer` stay frozen."""
    frozen = {id(p) for block in model.model.layers[:from_layer] for p in block.parameters()}
    gates, others = [], []
    for name, p in model.named_parameters():
        if id(p) in frozen:
            continue
        if name.endswith(GATE_KEYS):  # the gates and sharpness: their own rate, no decay
            gates.append((name, p))
        elif mode == "lora" and is_adapter_key(name):  # LoRA matrices and key convolutions
            others.append((name, p))
        elif mode == "full" and ".self_attn." in name and name.endswith(("_proj.weight", ".mem_k_conv")):
            others.append((name, p))
    keep = {id(p) for _, p in gates + others}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return gates, others


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """run.bf16, where the device has native bf16 (CUDA, or a CPU with AVX512-BF16 / AMX)."""
    from infinicli.loading import bf16_is_native

    return cfg.run.bf16 and bf16_is_native(device)


def averaged_start(cfg: TrainConfig) -> Path:
    """model.init_adapter averaged with model.init_average_with (loading.average_adapters), written to
    <run.out>/init_adapter.safetensors with init_adapter's metadata and `packaged.averaged_with` naming the
    other: the file scripts/package_adapter.py --average-with makes ; a run can start from a shipped one."""
    from infinicli.errors import ModelError
    from infinicli.loading import average_adapters, read_adapter, save_adapter

    m = cfg.model
    mine, meta = read_adapter(Path(m.init_adapter))
    theirs, their_meta = read_adapter(Path(m.init_average_with))
    icfg = dict(meta.get("infini_config", {}))
    try:
        their_icfg = their_meta.get("infini_config", {})
        mixed = average_adapters(mine, icfg, theirs, their_icfg, m.init_average_weight)
    except ModelError as e:
        raise ConfigError(f"model.init_average_with = {m.init_average_with}: {e}") from None
    averaged = {"adapter": m.init_average_with, "weight_of_from": m.init_average_weight}
    meta = {**meta, "infini_config": icfg, "packaged": {"from": m.init_adapter, "averaged_with": averaged}}
    path = Path(cfg.run.out) / "init_adapter.safetensors"
    save_adapter(mixed, meta, path)  # per-process temp file: ranks may write it at once
    return path


def build_training_model(cfg: TrainConfig, device: torch.device):
    """(LoadedModel, tokenizer, frozen base copy or None) for a config; trained tensors fp32 on `device`."""
    from infinicli.loading import build_model
    from infinicli.models import resolve_model
    from infinicli.tokenizer import load_tokenizer

    m = cfg.model
    model_dir = resolve_model(m.model or None)
    full = m.train == "full"
    weights = torch.bfloat16 if (use_bf16(cfg, device) and not full) else torch.float32
    adapter = m.init_adapter if m.init_adapter not in ("", "none") else None
    if adapter is not None and m.init_average_with not in ("", "none"):
        adapter = averaged_start(cfg)
    lm = build_model(
        model_dir, adapter=adapter, dtype=weights, segment_len=m.segment_len, update_rule=m.update_rule,
        for_training=True,
    )  # fmt: skip
    model = lm.model
    if adapter is None:
        for blk in model.model.layers:
            blk.self_attn.gate.data.fill_(float(m.gate_init))
        model.icfg.gate_init = float(m.gate_init)
    if m.train == "lora" and model.icfg.lora_rank <= 0:
        model.icfg.lora_rank = int(m.lora_rank)
        model.icfg.lora_alpha = float(m.lora_alpha)
        model.icfg.lora_targets = tuple(m.lora_targets)
        model.icfg.lora_scope = m.lora_scope
        model.add_lora()
    if m.lora_local_layers and not model.icfg.lora_local_layers:
        model.icfg.lora_local_layers = tuple(int(i) for i in m.lora_local_layers)
        model.icfg.lora_local_rank = int(m.lora_local_rank)
        try:
            model.add_lora()  # the memory-scoped deltas are there already: only the local LoRA is added
        except ValueError as e:
            raise ConfigError(f"model.lora_local_layers: {e}") from None
    model.icfg.write_chunk = int(m.write_chunk)
    if m.key_conv > 0 and model.icfg.key_conv <= 0:
        model.icfg.key_conv = int(m.key_conv)
        model.add_key_conv()
    if m.mem_scale and not model.icfg.mem_scale:
        model.icfg.mem_scale = True
        model.add_mem_scale()
        if m.mem_scale_init:
            try:
                model.sharpen(*parse_sharpen(m.mem_scale_init, model.cfg.n_layers))
            except ValueError as e:
                raise ConfigError(f"model.mem_scale_init = {e}") from None
    if m.gate_query and not model.icfg.gate_query:
        model.icfg.gate_query = True
        model.add_gate_query()
    if m.gate_content and not model.icfg.gate_content:
        model.icfg.gate_content = True
        model.add_gate_content()
    for name, p in model.named_parameters():
        if is_adapter_key(name):
            p.data = p.data.float()
    model.to(device)
    base = None
    if full:
        base = copy.deepcopy(model).requires_grad_(False).eval()
    return lm, load_tokenizer(model_dir), base


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine down to min_lr_ratio at the last step."""
    o = cfg.optim
    warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
    if o.schedule == "cosine" and cfg.run.steps > 1:
        t = min(1.0, step / (cfg.run.steps - 1))
        return warm * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return warm


def make_optimizer(gates: list, others: list, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the gates in their own group (own learning rate, never weight-decayed)."""
    o = cfg.optim
    groups = [{"params": [p for _, p in gates], "lr": o.gate_lr, "weight_decay": 0.0, "name": "gates"}]
    conv = [p for name, p in others if o.conv_lr > 0 and name.endswith(".mem_k_conv")]
    attn = [p for name, p in others if not (o.conv_lr > 0 and name.endswith(".mem_k_conv"))]
    if attn:
        groups.append({"params": attn, "lr": o.lr, "weight_decay": o.weight_decay, "name": "attn"})
    if conv:  # the key convolution's taps: their own rate, no decay (decay would pull them off the identity)
        groups.append({"params": conv, "lr": o.conv_lr, "weight_decay": 0.0, "name": "conv"})
    return torch.optim.AdamW(groups, betas=tuple(o.betas), eps=1e-8)


def group_lr(name: str | None, o: OptimSection) -> float:
    """The base learning rate of an optimizer group by its name (gates, conv or attn)."""
    return {"gates": o.gate_lr, "conv": o.conv_lr}.get(name or "", o.lr)


# -- checkpoints (safetensors + JSON metadata, no pickle) ---------------------------------------------


def save_checkpoint(path: Path, named: list, opt: torch.optim.Optimizer, meta: dict) -> None:
    """Trained tensors ("param/<name>") + AdamW state ("opt/<index>/<key>") + JSON metadata, atomically."""
    from safetensors.torch import save_file

    tensors = {f"param/{n}": p.detach().cpu().contiguous() for n, p in named}
    sd = opt.state_dict()
    scalars: dict[str, object] = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt/{idx}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{k}"] = v
    metadata = {
        "format": "infini-train-checkpoint-1",
        "meta": json.dumps(meta),
        "param_names": json.dumps([n for n, _ in named]),
        "param_groups": json.dumps(sd["param_groups"]),
        "opt_scalars": json.dumps(scalars),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_checkpoint_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})["meta"])


def load_checkpoint(path: Path, named: list, opt: torch.optim.Optimizer) -> dict:
    """Restore the trained tensors and the optimizer state in place; returns the metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        names = json.loads(md["param_names"])
        if names != [n for n, _ in named]:
            raise ValueError(f"{path}: the checkpoint's trained parameters do not match this configuration")
        for n, p in named:
            p.data.copy_(f.get_tensor(f"param/{n}").to(p.device, p.dtype))
        state: dict[int, dict] = {}
        for key in f.keys():
            if key.startswith("opt/"):
                _, idx, k = key.split("/", 2)
                state.setdefault(int(idx), {})[k] = f.get_tensor(key)
        for key, v in json.loads(md["opt_scalars"]).items():
            idx, k = key.split("/", 1)
            state.setdefault(int(idx), {})[k] = v
        groups = json.loads(md["param_groups"])
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        opt.load_state_dict({"state": state, "param_groups": groups})
        return json.loads(md["meta"])


def write_final_adapter(model: InfiniLlama, path: Path, cfg: TrainConfig, training: dict) -> None:
    """The trained adapter (gates + LoRA, or gates + full projections) with its training record."""
    from infinicli.loading import shape_id, write_adapter

    meta = {
        "model_shape": shape_id(model.cfg),
        "base_model": cfg.model.model or "smollm2-135m",
        "training": training,
    }
    if cfg.model.train != "full":
        write_adapter(model, path, meta)
        return
    from safetensors.torch import save_file

    tensors = model.adapter_state_dict()
    for name, p in model.named_parameters():
        if ".self_attn." in name and name.endswith("_proj.weight"):
            tensors[name] = p.detach().float().cpu().contiguous()
    md = {"format": "pt", "infini_config": json.dumps(model.icfg.to_dict())}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=md)
    os.replace(tmp, path)


# -- the loop ---------------------------------------------------------------------------------------


def _sample_rng(seed: int, rank: int, step: int, micro: int) -> random.Random:
    return random.Random(f"{seed}/{rank}/{step}/{micro}")


def base_answers(
    model: InfiniLlama, pool: DistillPool, max_new: int, eos: int, device: torch.device
) -> list[list[int]]:
    """Greedy answers of the base model (LoRA off, empty memory) to every prompt of the pool."""
    from infinicli.generate import generate

    out = []
    with lora_disabled(model):
        for ids in pool.items:
            room = max(0, min(max_new, pool.max_tokens - len(ids)))
            out.append(
                list(generate(model, model.empty_memory(1), ids, max_new_tokens=room, stop_ids=[eos]))
                if room
                else []
            )
    return out


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Trainer:
    """One training run (see the module docstring). `run()` returns the final adapter's path."""

    def __init__(
        self,
        cfg: TrainConfig,
        on_progress: Callable[[Progress], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ):
        self.cfg = cfg
        self.on_progress = on_progress or (lambda p: None)
        self.on_notice = on_notice or (lambda s: None)
        self.out = Path(cfg.run.out)

    def notice(self, msg: str) -> None:
        if self.dist.main:
            self.on_notice(msg)

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.dist, self.device = init_distributed(cfg.run.device)
        torch.manual_seed(cfg.run.seed)  # identical LoRA initialisation on every rank
        self.loaded, self.tok, base = build_training_model(cfg, self.device)
        self.model = self.loaded.model
        train_from, n_layers = cfg.model.train_from_layer, self.model.cfg.n_layers
        if train_from >= n_layers:
            raise ConfigError(
                f"model.train_from_layer = {train_from}: this model has {n_layers} layers (0-{n_layers - 1})"
            )
        self.gates, self.others = trainable_parameters(self.model, cfg.model.train, train_from)
        self.named = self.gates + self.others
        self.opt = make_optimizer(self.gates, self.others, cfg)
        self.objective = Objective(self.model, cfg, base)
        self.ddp: nn.Module = self.objective
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.objective)
        self.factory = SampleFactory.from_corpus(self.tok, cfg.model.segment_len, cfg.data)
        bf16 = use_bf16(cfg, self.device)
        self.autocast = bf16 and cfg.model.train == "full"
        if cfg.run.bf16 and not bf16:
            self.notice("run.bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training in fp32")
        n_train = sum(p.numel() for _, p in self.named)
        self.notice(
            f"model {self.loaded.model_dir.name}: {n_train:,} trained parameters ({cfg.model.train}), "
            f"segments of {cfg.model.segment_len} tokens, device {self.device}, world {self.dist.world}; "
            f"data: {len(self.factory.books)} book(s), {len(self.factory.babi)} bAbI questions, "
            f"mixture {self.factory.weights}"
        )

    def _distill_pool(self) -> DistillPool | None:
        cfg = self.cfg
        if cfg.loss.distill <= 0 or cfg.loss.distill_prob <= 0:
            return None
        if not cfg.loss.distill_memory:  # the model reads the chat inputs with an empty memory too
            if cfg.model.train == "gates":
                return None  # gates alone cannot change the model with empty memory: nothing to distil
            ic = self.model.icfg
            if cfg.model.train == "lora" and ic.lora_scope == "memory" and not ic.lora_local_layers:
                return None  # memory-scoped LoRA leaves the empty-memory model exactly the base: KL is 0
        pool = DistillPool(
            self.tok,
            self.factory,
            cfg.loss.distill_pool,
            cfg.loss.distill_max_tokens,
            cfg.run.seed,
            cfg.loss.distill_fresh,
        )
        if cfg.loss.distill_response_tokens <= 0:
            return pool
        cache = self.out / DISTILL
        if self.dist.enabled and not self.dist.main:
            self._barrier()  # rank 0 writes the answers first
        answers = None
        if cache.is_file():
            try:
                saved = json.loads(cache.read_text())
                if saved.get("prompts") == pool.items:
                    answers = saved["answers"]
            except (ValueError, KeyError):
                answers = None
        if answers is None:
            self.notice(f"distillation: the base model answers {len(pool.items)} chat prompts once")
            self.model.eval()
            answers = base_answers(
                self.model, pool, cfg.loss.distill_response_tokens, self.tok.eos_id, self.device
            )
            if self.dist.main:
                self.out.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(cache.name + ".tmp")
                tmp.write_text(json.dumps({"prompts": pool.items, "answers": answers}))
                os.replace(tmp, cache)
        if self.dist.enabled and self.dist.main:
            self._barrier()
        pool.complete(answers)
        return pool

    def _barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def _allreduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def _ranks_agree(self) -> bool:
        if not self.dist.enabled:
            return True
        import torch.distributed as dist

        flat = torch.cat([p.detach().double().flatten() for _, p in self.named])
        pos = torch.arange(flat.numel(), dtype=torch.float64, device=flat.device)
        mine = torch.stack([flat.sum(), flat.abs().sum(), (flat * pos).sum()])
        lo, hi = mine.clone(), mine.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return bool(torch.equal(lo, hi))

    def state_meta(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed,
            "config": self.cfg.to_dict(),
            "seed": self.cfg.run.seed,
            "world_size": self.dist.world,
            "acc_window": list(self.acc_window),
            "last": self.last,
        }

    def save(self, adapter: bool = False) -> None:
        """The checkpoint; with adapter, also the adapter of the steps done (marked incomplete), so a run
        that stops here still leaves one to use."""
        if self.dist.main:
            save_checkpoint(self.out / CHECKPOINT, self.named, self.opt, self.state_meta())
            if adapter and self.step > 0:
                record = self.training_record(done=False)
                write_final_adapter(self.model, self.out / ADAPTER, self.cfg, record)

    def run(self, resume: bool = False) -> Path:
        """Train; Ctrl-C or SIGTERM (e.g. `kill PID` of a background run) saves a checkpoint and stops."""
        import signal
        import threading

        threads = torch.get_num_threads()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return self._run(resume)
        finally:
            torch.set_num_threads(threads)  # run.threads is this run's setting, not the process's
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _run(self, resume: bool) -> Path:
        from infinicli.train.config import to_toml

        cfg = self.cfg
        self.setup()
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.acc_window: deque = deque(maxlen=50)
        self.last: dict = {}
        ckpt = self.out / CHECKPOINT
        if resume and ckpt.is_file():
            meta = load_checkpoint(ckpt, self.named, self.opt)
            self.step, self.tokens_seen, self.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed_s"]
            self.acc_window.extend(meta.get("acc_window", []))
            if cfg.run.time_budget_s > 0:  # the budget was turned into steps when the run started
                saved = meta.get("config", {})
                cfg.run.steps = saved.get("run", {}).get("steps", cfg.run.steps)
                cfg.curriculum.ramp_steps = saved.get("curriculum", {}).get(
                    "ramp_steps", cfg.curriculum.ramp_steps
                )
            self.last = meta.get("last", {})
            if meta.get("world_size", 1) != self.dist.world:
                self.notice(f"resuming a run of world size {meta.get('world_size')} with {self.dist.world}")
            self.notice(f"resumed {ckpt} at step {self.step} ({self.tokens_seen:,} tokens seen)")
        elif resume:
            self.notice(f"nothing to resume in {self.out}: starting a new run")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / CONFIG_NAME).write_text(to_toml(cfg))
        pool = self._distill_pool()
        self.model.train()
        if cfg.run.time_budget_s > 0 and self.step == 0:
            self.fit_budget(pool)
        elif cfg.curriculum.ramp_fraction > 0:
            cfg.curriculum.ramp_steps = max(1, round(cfg.curriculum.ramp_fraction * cfg.run.steps))
        self._consistent = True
        try:
            while self.step < cfg.run.steps:
                self._one_step(pool)
                every = cfg.run.checkpoint_every
                if every > 0 and self.step % every == 0 and self.step < cfg.run.steps:
                    self.save(adapter=True)
        except KeyboardInterrupt:
            if self._consistent:  # not in the middle of the optimizer update
                self.save(adapter=True)
                self.notice(
                    f"interrupted: checkpoint at step {self.step} in {self.out} (continue with --resume)"
                )
            raise
        self.save()
        agree = self._ranks_agree()
        adapter = self.out / ADAPTER
        if self.dist.main:
            write_final_adapter(self.model, adapter, cfg, self.training_record(done=True, ranks_agree=agree))
        self.notice(
            f"wrote {adapter} after {self.step} steps, {self.tokens_seen:,} tokens, {self.elapsed:.0f} s"
        )
        if self.dist.enabled:
            self._barrier()
        return adapter

    def _timed_pass(self, n: int, distill: tuple[torch.Tensor, torch.Tensor] | None) -> float:
        """Seconds for one forward + backward of a batch of n segments (gradients discarded)."""
        cfg = self.cfg
        rng = random.Random(f"calibrate/{cfg.run.seed}/{self.dist.rank}/{n}")
        batch = self.factory.batch(rng, n, cfg.optim.batch_size).to(self.device)
        sync = self.ddp.no_sync() if self.dist.enabled else contextlib.nullcontext()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, _ = self.ddp(batch, distill)
        with sync:
            loss.backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self.opt.zero_grad(set_to_none=True)
        return dt

    def fit_budget(self, pool: DistillPool | None) -> None:
        """run.time_budget_s: time passes at the curriculum's shortest and longest samples (no update), fit
        seconds = a + b·segments, and set run.steps (and ramp_steps from ramp_fraction) so that the run
        fills the budget. The chosen numbers land in the run's config: rerunning with them and no budget
        repeats the run step for step."""
        cfg, c = self.cfg, self.cfg.curriculum
        distill = None
        if pool is not None:
            ids, mask = pool.batch(random.Random(f"calibrate/{cfg.run.seed}"), cfg.optim.batch_size)
            distill = (ids.to(self.device), mask.to(self.device))
        lo, hi = c.start_min, max(c.start_max, c.end_max)
        self._timed_pass(lo, distill)  # warm-up (allocations, kernels)
        t_lo = min(self._timed_pass(lo, distill) for _ in range(2))
        t_hi = min(self._timed_pass(hi, distill) for _ in range(2))
        t = self._allreduce(torch.tensor([t_lo, t_hi], device=self.device, dtype=torch.float64))
        t_lo, t_hi = (t / self.dist.world).tolist()
        b = max(0.0, (t_hi - t_lo) / max(1, hi - lo))
        a = max(0.0, t_lo - b * lo)
        r = c.ramp_fraction if c.ramp_fraction > 0 else 1.0
        start_mean, end_mean = (c.start_min + c.start_max) / 2, (c.end_min + c.end_max) / 2
        mean_n = r * (start_mean + end_mean) / 2 + (1 - r) * end_mean
        per_step = cfg.optim.grad_accum * (a + b * (mean_n + 1))  # + 1: the final segment
        steps = max(1, int(0.95 * cfg.run.time_budget_s / per_step))
        cfg.run.steps = steps
        if c.ramp_fraction > 0:
            c.ramp_steps = max(1, round(c.ramp_fraction * steps))
        if self.dist.main:
            from infinicli.train.config import to_toml

            (self.out / CONFIG_NAME).write_text(to_toml(cfg))
        self.notice(
            f"time budget {cfg.run.time_budget_s:.0f} s: {t_lo:.2f} s per pass at {lo} segments, "
            f"{t_hi:.2f} s at {hi}; run.steps = {steps}, curriculum.ramp_steps = {c.ramp_steps}"
        )

    def training_record(self, done: bool, ranks_agree: bool | None = None) -> dict:
        rec = {
            "recipe": self.cfg.to_dict(),
            "steps": self.step,
            "complete": done,
            "tokens_seen": self.tokens_seen,
            "wall_time_s": round(self.elapsed, 1),
            "world_size": self.dist.world,
            "device": str(self.device),
            "final_metrics": self.last,
        }
        if ranks_agree is not None:
            rec["ranks_agree"] = ranks_agree
        return rec

    def _one_step(self, pool: DistillPool | None) -> None:
        cfg, o = self.cfg, self.cfg.optim
        t0 = time.perf_counter()
        f = lr_factor(self.step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = group_lr(g.get("name"), o) * f
        totals: dict[str, torch.Tensor] = {}
        tokens = 0
        for micro in range(o.grad_accum):
            rng = _sample_rng(cfg.run.seed, self.dist.rank, self.step, micro)
            n = segments_for_step(rng, self.step, cfg.curriculum)
            batch = self.factory.batch(rng, n, o.batch_size).to(self.device)
            tokens += batch.tokens
            distill = None
            if pool is not None and rng.random() < cfg.loss.distill_prob:
                ids, mask = pool.batch(rng, o.batch_size)
                distill = (ids.to(self.device), mask.to(self.device))
                tokens += int(mask.sum())
            last = micro == o.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.ddp.no_sync()
            amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)
            with sync:  # no gradient all-reduce before the last forward of the step
                with amp:
                    loss, stats = self.ddp(batch, distill)
                (loss / o.grad_accum).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v.detach().float()
            totals["loss"] = totals.get("loss", 0) + loss.detach().float() / o.grad_accum
        params = [p for _, p in self.named]
        if o.grad_clip > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        else:
            gn = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        self._consistent = False
        self.opt.step()
        self.step += 1
        self._consistent = True
        self.opt.zero_grad(set_to_none=True)
        keys = sorted(totals)
        vec = self._allreduce(
            torch.stack(
                [totals[k].to(self.device) for k in keys] + [torch.tensor(float(tokens), device=self.device)]
            )
        )
        tot = dict(zip(keys + ["tokens"], vec.tolist(), strict=True))
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self.tokens_seen += int(tot["tokens"])
        acc = tot["exact"] / tot["qa"] if tot["qa"] > 0 else None
        if acc is not None:
            self.acc_window.append((tot["exact"], tot["qa"]))
        win_qa = sum(q for _, q in self.acc_window)
        betas = [p.detach().float() for n, p in self.gates if n.endswith(".gate")]
        gate = torch.cat(betas).sigmoid().mean().item()
        prog = Progress(
            step=self.step,
            steps=cfg.run.steps,
            loss=tot["loss"] / self.dist.world,
            answer_loss=tot["ans_sum"] / tot["ans_cnt"] if tot["ans_cnt"] > 0 else None,
            lm_loss=tot["lm_sum"] / tot["lm_cnt"] if tot["lm_cnt"] > 0 else None,
            kl=tot["kl_sum"] / tot["kl_n"] if tot["kl_n"] > 0 else None,
            read=tot["read_sum"] / tot["read_n"] if tot["read_n"] > 0 else None,
            acc=acc,
            acc_avg=sum(e for e, _ in self.acc_window) / win_qa if win_qa > 0 else None,
            token_acc=tot["tok_right"] / tot["ans_cnt"] if tot["ans_cnt"] > 0 else None,
            segments=tot["segments"] / max(1.0, tot["samples"]),
            tokens=int(tot["tokens"]),
            tokens_seen=self.tokens_seen,
            tokens_per_s=tot["tokens"] / dt if dt > 0 else 0.0,
            lr=o.lr * f,
            gate_lr=o.gate_lr * f,
            gate=gate,
            grad_norm=float(gn),
            elapsed_s=self.elapsed,
        )
        self.last = {k: v for k, v in asdict(prog).items() if v is not None}
        if self.dist.main:
            with open(self.out / METRICS, "a") as fh:
                fh.write(json.dumps(self.last) + "\n")
            if self.step % max(1, cfg.run.log_every) == 0 or self.step == cfg.run.steps:
                self.on_progress(prog)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Path:
    """Run a training job; returns the path of the adapter it wrote."""
    return Trainer(cfg, on_progress, on_notice).run(resume=resume)
