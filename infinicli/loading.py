"""Load a converted model folder plus an Infini-attention adapter into an InfiniLlama, ready to run.

Weights load through safetensors only (no pickle). The adapter (gates, optional LoRA) is a small safetensors
file whose metadata carries the InfiniConfig it was trained with; the default one ships inside the package.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from infinicli.errors import ModelError, UsageError
from infinicli.kernels import cpu_flags
from infinicli.model import GATE_KEYS, InfiniConfig, InfiniLlama, ModelConfig, load_config

ADAPTER_DIR = Path(__file__).parent / "adapters"
DEFAULT_ADAPTER = ADAPTER_DIR / "smollm2-135m.safetensors"


@dataclass
class LoadedModel:
    model: InfiniLlama
    model_dir: Path
    model_fingerprint: str
    adapter_path: Path | None
    adapter_fingerprint: str
    adapter_meta: dict
    device: torch.device
    dtype: torch.dtype


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul support (AVX512-BF16 or AMX), where bf16 pays."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_native(device: torch.device) -> bool:
    """bf16 runs natively (and so faster than fp32): CUDA, or a CPU with AVX512-BF16 / AMX."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device {device}: {e}") from None


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "", "auto"):
        if bf16_is_native(device):
            return torch.bfloat16
        return torch.float32
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype not in table:
        raise UsageError(f"--dtype {dtype}: use auto, fp32 or bf16")
    return table[dtype]


def file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


JSON_META = ("infini_config", "training", "packaged")  # adapter metadata stored as JSON text


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of an adapter file, the JSON_META entries parsed ('infini_config' holds the
    InfiniConfig, 'training' the recipe and run, 'packaged' what scripts/package_adapter.py did)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable adapter file ({e})") from None
    parsed = {k: (json.loads(v) if k in JSON_META else v) for k, v in meta.items()}
    return tensors, parsed


def layer_of(key: str) -> int:
    """The layer index of an adapter tensor, "model.layers.<i>.self_attn...." → i."""
    return int(key.split(".")[2])


def average_adapters(
    mine: dict[str, torch.Tensor],
    icfg: dict,
    theirs: dict[str, torch.Tensor],
    their_icfg: dict,
    weight: float,
    layers: set[int] | None = None,
) -> dict[str, torch.Tensor]:
    """weight·mine + (1 − weight)·theirs: two adapters of one lineage averaged (as in model soups).

    LoRA pairs are mixed exactly: the low-rank factors are stacked, so the rank is r₁ + r₂ at the same scale
    α/r and the merged update is weight·B₁A₁ + (1 − weight)·B₂A₂; every other tensor (gates, sharpness, key
    convolution) linearly. `icfg` (mine's InfiniConfig dict) gets the summed rank. With `layers`, only tensors
    of those layers ("model.layers.<i>.") are mixed; the others keep weight 1. ModelError when the two do
    not have the same tensors or LoRA scale."""
    if not 0.0 <= weight <= 1.0:
        raise ModelError(f"average weight {weight}: use a number from 0 to 1")
    if set(theirs) != set(mine):
        raise ModelError("not the same adapter tensors as the source")
    r1, r2 = int(icfg.get("lora_rank", 0)), int(their_icfg.get("lora_rank", 0))
    scale1 = icfg.get("lora_alpha", 16.0) / r1 if r1 else 0.0
    if r1 and scale1 != their_icfg.get("lora_alpha", 16.0) / r2:
        raise ModelError("another LoRA scale (alpha / rank)")
    out: dict[str, torch.Tensor] = {}
    for k, t in mine.items():
        w = weight if layers is None or layer_of(k) in layers else 1.0
        if k.endswith(".lora_A"):  # [r, in]: both down-projections, stacked
            out[k] = torch.cat([t, theirs[k]], dim=0)
        elif k.endswith(".lora_B"):  # [out, r]: each up-projection with its weight
            out[k] = torch.cat([w * t, (1.0 - w) * theirs[k]], dim=1)
        else:
            out[k] = (w * t.float() + (1.0 - w) * theirs[k].float()).to(t.dtype)
    if r1:
        icfg["lora_rank"] = r1 + r2
        icfg["lora_alpha"] = scale1 * (r1 + r2)  # the same scale α/r as both sources
    if icfg.get("lora_local_layers"):  # local LoRA (the same layers: the same tensors), stacked likewise
        mine_local, their_local = icfg.get("lora_local_rank", 8), their_icfg.get("lora_local_rank", 8)
        icfg["lora_local_rank"] = int(mine_local) + int(their_local)
    return out


def save_adapter(tensors: dict[str, torch.Tensor], meta: dict, path: Path) -> None:
    """Write an adapter file: tensors plus metadata, non-string entries as JSON (read_adapter parses the
    JSON_META ones back). Atomic: a temp file of this process, then rename."""
    from safetensors.torch import save_file

    text = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=text)
    os.replace(tmp, path)


def write_adapter(model: InfiniLlama, path: Path, extra_meta: dict | None = None) -> None:
    """Save gates + LoRA of `model` with its InfiniConfig (atomic: temp file then rename)."""
    meta = {"format": "pt", "infini_config": model.icfg.to_dict(), **(extra_meta or {})}
    save_adapter(model.adapter_state_dict(), meta, path)


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelError(f"model folder {model_dir} has no weights (*.safetensors)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def load_weights_as(model_dir: Path, dtype: torch.dtype, fingerprint: str) -> dict[str, torch.Tensor]:
    """Weights in `dtype`. A converted copy is kept once per model under INFINI_HOME/derived (bf16 weights
    load twice as fast and skip a 135M-parameter conversion at every start)."""
    from safetensors.torch import load_file, save_file

    if dtype == torch.float32 or not fingerprint:
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_weights(model_dir).items()}
    from infinicli.models import infini_home

    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).split(".")[-1])
    cached = infini_home() / "derived" / f"{fingerprint}-{name}.safetensors"
    if cached.is_file():
        try:
            return load_file(str(cached))
        except Exception:  # a damaged derived copy is rebuilt
            cached.unlink(missing_ok=True)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_weights(model_dir).items()}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, cached)
    except OSError:  # read-only or full cache: just use the converted weights this time
        pass
    return sd


def build_model(
    model_dir: Path,
    *,
    adapter: str | Path | None = "default",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    segment_len: int | None = None,
    update_rule: str | None = None,
    for_training: bool = False,
    model_fingerprint: str = "",
) -> LoadedModel:
    """Base weights + adapter → InfiniLlama on `device` in `dtype` (LoRA merged unless for_training)."""
    model_dir = Path(model_dir)
    cfg: ModelConfig = load_config(model_dir)
    adapter_path: Path | None = None
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {}
    if adapter == "default":
        adapter_path = DEFAULT_ADAPTER if DEFAULT_ADAPTER.exists() else None
    elif adapter not in (None, "none"):
        adapter_path = Path(adapter)
        if not adapter_path.is_file():
            raise ModelError(f"adapter {adapter_path}: no such file")
    if adapter_path is not None:
        tensors, meta = read_adapter(adapter_path)
        shape = meta.get("model_shape")
        if shape and shape != _shape_id(cfg):
            if adapter == "default":  # the shipped adapter is for the default model only
                adapter_path, tensors, meta = None, {}, {}
            else:
                raise ModelError(f"adapter {adapter_path} was trained for another model shape ({shape})")
    icfg = InfiniConfig.from_dict(meta.get("infini_config", {})) if meta else InfiniConfig()
    if segment_len is not None:
        icfg.segment_len = int(segment_len)
    if update_rule is not None:
        icfg.update_rule = update_rule

    model = InfiniLlama(cfg, icfg, device="meta")  # no allocation: weights are assigned below
    sd = load_weights_as(model_dir, dtype, model_fingerprint)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    for k in model.base_state_dict_keys():
        if k not in sd:
            raise ModelError(f"model folder {model_dir}: weight {k} is missing")
    gates = {k: v for k, v in model.state_dict().items() if k.endswith(".gate")}
    for k in gates:
        sd[k] = torch.full(gates[k].shape, float(icfg.gate_init))
    model.load_state_dict(sd, strict=False, assign=True)
    if icfg.lora_rank > 0:
        model.add_lora()  # after the meta-device construction: LoRA matrices are real CPU tensors
    model.add_key_conv()  # (when icfg.key_conv > 0)
    model.add_mem_scale()  # (when icfg.mem_scale)
    model.add_gate_query()  # (when icfg.gate_query)
    model.add_gate_content()  # (when icfg.gate_content)
    missing = set(tensors) - set(model.state_dict())
    if missing:
        raise ModelError(f"adapter {adapter_path} does not fit this model ({sorted(missing)[0]} unknown)")
    if tensors:
        model.load_state_dict(tensors, strict=False, assign=True)
    if not for_training:
        model.merge_lora()
    model = model.to(device=device, dtype=dtype)
    for name, p in model.named_parameters():  # gates and sharpness stay fp32
        if name.endswith(GATE_KEYS):
            p.data = p.data.float()
    model.eval()
    if not for_training:
        model.requires_grad_(False)
    return LoadedModel(
        model=model,
        model_dir=model_dir,
        model_fingerprint=model_fingerprint,
        adapter_path=adapter_path,
        adapter_fingerprint=file_fingerprint(adapter_path) if adapter_path else "none",
        adapter_meta=meta,
        device=torch.device(device),
        dtype=dtype,
    )


def _shape_id(cfg: ModelConfig) -> str:
    return f"L{cfg.n_layers}-H{cfg.n_heads}-KV{cfg.n_kv_heads}-d{cfg.head_dim}-C{cfg.hidden_size}"


shape_id = _shape_id
