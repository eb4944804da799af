"""Native CPU kernels of the bf16 reading path, built on first use with the system C compiler (ctypes).

* attention.c: causal attention inside a segment on the bf16 dot-product instructions of AVX512-BF16 CPUs,
  optionally rotating queries and keys (RoPE) as it loads them. torch's CPU flash-attention kernel computes
  bf16 inputs in fp32; this one runs the two matrix products on vdpbf16ps and keeps scores and softmax in
  fp32, about 2-3x faster at 1024-token segments.
* fused.c: RMSNorm, SiLU·up, and the compressive memory's read with the gate mix (eq. 3 and 6) and its write
  (eq. 4 / 5), each one pass instead of a chain of torch ops; M and z stay fp32.

Every wrapper returns None whenever its kernel does not apply (no AVX512-BF16, no C compiler, not bf16, head
dim other than 64, batch other than 1 for the memory kernels, gradients wanted, INFINI_NATIVE_ATTENTION=0, or
inside `disabled()`): the caller then runs the same math in torch. The built library is cached under
INFINI_HOME/derived/kernels, named by a hash of the sources and the compiler flags, so a process pays only a
~1 ms dlopen after the first build (~2 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

_DIR = Path(__file__).parent
_SRCS = [_DIR / "attention.c", _DIR / "fused.c"]
_HEADERS = [_DIR / "simd.h"]
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma"]
_FLAGS += ["-shared", "-fPIC", "-pthread", f"-I{_DIR}"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_why_not = ""
_off = 0  # > 0 inside disabled()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty off Linux or when unreadable); read once."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _build(cache_dir: Path) -> Path:
    """Compile the kernels into cache_dir (atomically) unless these sources were built with these flags.

    With OpenMP first when torch runs on OpenMP: the library then shares torch's libgomp and its threads
    (simd.h's parallel_for); where -fopenmp does not build, with its own pthreads."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    src = b"".join(p.read_bytes() for p in _SRCS + _HEADERS)
    tried = [["-fopenmp"], []] if torch.backends.openmp.is_available() else [[]]
    err = ""
    for extra in tried:
        flags = " ".join(f for f in _FLAGS + extra if not f.startswith("-I"))
        tag = hashlib.sha256(src + flags.encode() + cc.encode()).hexdigest()[:16]
        lib = cache_dir / f"infini-kernels-{tag}.so"
        if lib.is_file():
            return lib
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
        os.close(fd)
        try:
            cmd = [cc, *_FLAGS, *extra, "-o", tmp, *map(str, _SRCS), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode == 0:
                os.replace(tmp, lib)
                return lib
            err = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "?"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"{cc} failed: {err}")


_P, _I, _L, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
_SIGNATURES = {  # name: argument types (all return int: 0 done, -1 not handled)
    "infini_causal_attention": [_P] * 4 + [_I] * 5 + [_L] * 12 + [_F, _P, _P, _I],
    "infini_rmsnorm": [_P, _P, _P, _L, _I, _F, _I],
    "infini_silu_mul": [_P, _P, _L, _I],
    "infini_mem_read": [_P, _L, _L, _P, _P, _P, _P, _L, _L, _P, _P, _P, _L, _L, _P, _I, _I, _I, _F, _I],
    "infini_mem_write": [_P, _L, _P, _L, _P, _P, _P, _P, _P, _I, _I, _I, _F, _I],
}


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, _why_not
    if _off:
        return None
    if _tried:  # every call asks: no lock once decided
        return _lib
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("INFINI_NATIVE_ATTENTION", "1").strip() in ("0", "false", "no", "off"):
            _why_not = "disabled by INFINI_NATIVE_ATTENTION"
            return None
        if "avx512_bf16" not in cpu_flags():
            _why_not = "this CPU has no AVX512-BF16"
            return None
        try:
            from infinicli.models import infini_home

            lib = ctypes.CDLL(str(_build(infini_home() / "derived" / "kernels")))
        except Exception as e:  # no compiler, read-only cache, ...: torch's kernels do the job
            _why_not = f"native kernels unavailable ({e})"
            return None
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = ctypes.c_int, argtypes
        _lib = lib
        return _lib


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside: every wrapper returns None, so the model runs torch's ops (A/B comparisons, tests)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def native_attention_status() -> str:
    """'native' when the kernels are in use, else why not (for `infini bench speed` and debugging)."""
    return "native" if _load() is not None else (_why_not or "disabled")


def _ready(*ts: torch.Tensor) -> ctypes.CDLL | None:
    """The library when every tensor is on the CPU and none wants gradients, else None."""
    for t in ts:
        if t.device.type != "cpu" or (t.requires_grad and torch.is_grad_enabled()):
            return None
    return _load()


def _bf16_rows(t: torch.Tensor, width: int) -> bool:
    """t is bf16 [1, T, width] (or [T, width]) with unit stride along width."""
    if t.dtype != torch.bfloat16 or t.shape[-1] != width or t.stride(-1) != 1:
        return False
    return t.dim() == 2 or (t.dim() == 3 and t.shape[0] == 1)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Causal softmax attention of one segment, or None when the native kernel does not apply.

    q: [B, H, T, 64] bf16, k / v: [B, Hkv, T, 64] bf16 (H a multiple of Hkv; any strides with the last dim
    contiguous). cos, sin: None, or RoPE tables [T, 64] for positions 0..T-1, applied to q and k inside the
    kernel (q and k are then the pre-RoPE projections). Returns [B, H, T, 64] bf16: a transposed view of a
    [B, T, H, 64] tensor, so the heads merge back into [B, T, H·64] without a copy.
    """
    if not (q.dtype == k.dtype == v.dtype == torch.bfloat16):
        return None
    B, H, T, d = q.shape
    Hkv = k.shape[1]
    if d != 64 or H % Hkv or k.shape != (B, Hkv, T, d) or v.shape != k.shape:
        return None
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return None
    if cos is not None:
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        if cos.shape != (T, d) or sin.shape != (T, d):
            return None
    lib = _ready(q, k, v)
    if lib is None:
        return None
    out = torch.empty(B, T, H, d, dtype=torch.bfloat16)
    rc = lib.infini_causal_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
        B, H, Hkv, T, d,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(2), out.stride(1),
        float(d) ** -0.5,
        None if cos is None else cos.data_ptr(), None if sin is None else sin.data_ptr(),
        torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        return None
    return out.transpose(1, 2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """Llama's RMSNorm of bf16 x [..., C] with a bf16 weight (C a multiple of 16) in one pass, or None."""
    C = x.shape[-1]
    if x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16 or C % 16 or not x.is_contiguous():
        return None
    lib = _ready(x, weight)
    if lib is None:
        return None
    y = torch.empty_like(x)
    w = weight.contiguous()
    n = x.numel() // C
    rc = lib.infini_rmsnorm(x.data_ptr(), w.data_ptr(), y.data_ptr(), n, C, eps, torch.get_num_threads())
    return y if rc == 0 else None


def silu_mul_(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
    """g ← silu(g)·u in place (bf16, same shape, contiguous), one pass; g, or None when it does not apply."""
    if not (g.dtype == u.dtype == torch.bfloat16) or g.shape != u.shape:
        return None
    if not (g.is_contiguous() and u.is_contiguous()):
        return None
    lib = _ready(g, u)
    if lib is None or lib.infini_silu_mul(g.data_ptr(), u.data_ptr(), g.numel(), torch.get_num_threads()):
        return None
    return g


def _memory_args(M: torch.Tensor, z: torch.Tensor, scale: torch.Tensor | None, heads: int) -> tuple | None:
    """fp32 contiguous M [Hkv, 64, 64], z [Hkv, 64] of batch 1 and the sharpness exp(s) per head, or None."""
    if M.dtype != torch.float32 or z.dtype != torch.float32 or M.dim() != 4 or M.shape[0] != 1:
        return None
    if M.shape[2:] != (64, 64):
        return None
    a = None if scale is None else scale.detach().float().contiguous()
    if a is not None and a.numel() != heads:
        return None
    return M.contiguous(), z.contiguous(), a


def memory_read(
    q_m: torch.Tensor,  # [1, T, H·64] bf16: the memory queries before sharpening and σ
    scale: torch.Tensor | None,  # [H] exp(s) per query head, or None
    M: torch.Tensor,  # [1, Hkv, 64, 64] fp32
    z: torch.Tensor,  # [1, Hkv, 64] fp32
    gate: torch.Tensor,  # [H] β, or [1, H, T] per token (model.InfiniConfig.gate_query)
    a_dot: torch.Tensor,  # [1, H, T, 64] bf16 local attention: overwritten with the mix
    eps: float,
    mem_out: bool = False,
    content: tuple[torch.Tensor, torch.Tensor] | None = None,  # (v, u) [H, 64] of a content gate
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Eq. 3 then eq. 6 in one pass: A = A_dot + sigmoid(β)(σ(a q)M / (σ(a q)·z + eps) − A_dot), written over
    a_dot (returned), and with mem_out=True also sigmoid(β)·A_mem as [1, T, H·64] bf16; or None. β is one
    logit per head or, for a query gate, one per head and token; a content gate adds (v·A_mem + u·A_dot)/8
    to it per row (model.InfiniConfig.gate_content)."""
    H, Hkv = a_dot.shape[1], M.shape[1]
    T = a_dot.shape[2]
    if a_dot.dtype != torch.bfloat16 or a_dot.shape != (1, H, T, 64) or a_dot.stride(-1) != 1:
        return None
    if not _bf16_rows(q_m, H * 64) or q_m.shape[-2] != T or H % Hkv:
        return None
    args = _memory_args(M, z, scale, H)
    lib = _ready(q_m, M, z, gate, a_dot)
    if args is None or lib is None:
        return None
    M, z, a = args
    if gate.shape not in ((H,), (1, H, T)):
        return None
    g = gate.detach().float().contiguous()  # logits: the kernel takes the sigmoid
    gs_h, gs_t = (1, 0) if gate.dim() == 1 else (T, 1)
    gv = gu = None
    if content is not None:
        gv, gu = (c.detach().float().contiguous() for c in content)
        if gv.shape != (H, 64) or gu.shape != (H, 64):
            return None
    mo = torch.empty(1, T, H * 64, dtype=torch.bfloat16) if mem_out else None
    rc = lib.infini_mem_read(
        q_m.data_ptr(), q_m.stride(-2), 64,
        None if a is None else a.data_ptr(), M.data_ptr(), z.data_ptr(), g.data_ptr(), gs_h, gs_t,
        None if gv is None else gv.data_ptr(), None if gu is None else gu.data_ptr(),
        a_dot.data_ptr(), a_dot.stride(2), a_dot.stride(1),
        None if mo is None else mo.data_ptr(),
        T, H, Hkv, eps, torch.get_num_threads(),
    )  # fmt: skip
    return None if rc else (a_dot, mo)


def memory_write(
    k_m: torch.Tensor,  # [1, T, Hkv·64] bf16: the memory keys before sharpening and σ
    v_m: torch.Tensor,  # [1, T, Hkv·64] bf16
    scale: torch.Tensor | None,  # [Hkv] exp(s), or None
    M: torch.Tensor,  # [1, Hkv, 64, 64] fp32
    z: torch.Tensor,  # [1, Hkv, 64] fp32
    rule: str,
    eps: float,
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Eq. 5 (rule "delta") or eq. 4 ("linear") with σk = σ(a k): the new (M, z) as new tensors, or None.
    chunk > 0 (delta rule): the tokens go in consecutive chunks of that many, as memory.update writes them."""
    Hkv = M.shape[1]
    T = k_m.shape[-2]
    if rule not in ("delta", "linear") or not _bf16_rows(k_m, Hkv * 64) or not _bf16_rows(v_m, Hkv * 64):
        return None
    if v_m.shape[-2] != T:
        return None
    args = _memory_args(M, z, scale, Hkv)
    lib = _ready(k_m, v_m, M, z)
    if args is None or lib is None:
        return None
    M, z, a = args
    step = chunk if rule == "delta" and 0 < chunk < T else T
    for t in range(0, T, step):
        n = min(step, T - t)
        Mo, zo = torch.empty_like(M), torch.empty_like(z)
        rc = lib.infini_mem_write(
            k_m[..., t, :].data_ptr(), k_m.stride(-2), v_m[..., t, :].data_ptr(), v_m.stride(-2),
            None if a is None else a.data_ptr(), M.data_ptr(), z.data_ptr(), Mo.data_ptr(), zo.data_ptr(),
            n, Hkv, int(rule == "delta"), eps, torch.get_num_threads(),
        )  # fmt: skip
        if rc:
            raise MemoryError("native memory write: no scratch memory")
        M, z = Mo, zo
    return M, z
