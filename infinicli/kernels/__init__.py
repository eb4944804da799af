"""Native CPU kernels, built on first use with the system C compiler and loaded through ctypes.

One kernel so far: causal attention inside a segment on the bf16 dot-product instructions of AVX512-BF16 CPUs
(attention.c). torch's CPU flash-attention kernel computes bf16 inputs in fp32; this one runs the two matrix
products on vdpbf16ps and keeps scores and softmax in fp32, about 2-3x faster at 1024-token segments.

`causal_attention` returns None whenever the kernel does not apply (no AVX512-BF16, no C compiler, not bf16,
head dim other than 64, gradients wanted, INFINI_NATIVE_ATTENTION=0): the caller then uses torch's
scaled_dot_product_attention. The built library is cached under INFINI_HOME/derived/kernels, named by a
hash of the source and the compiler flags, so a process pays only a ~1 ms dlopen after the first build (~1 s).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

_SRC = Path(__file__).with_name("attention.c")
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma"]
_FLAGS += ["-shared", "-fPIC", "-pthread"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_why_not = ""


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
    """Compile attention.c into cache_dir (atomically) unless this source was built with these flags."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    src = _SRC.read_bytes()
    tag = hashlib.sha256(src + " ".join(_FLAGS).encode() + cc.encode()).hexdigest()[:16]
    lib = cache_dir / f"attention-{tag}.so"
    if lib.is_file():
        return lib
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    try:
        res = subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SRC), "-lm"], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {res.stderr.strip().splitlines()[-1] if res.stderr else '?'}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, _why_not
    if _tried:  # every attention call asks: no lock once decided
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
        except Exception as e:  # no compiler, read-only cache, ...: torch's kernel does the job
            _why_not = f"native attention unavailable ({e})"
            return None
        fn = lib.infini_causal_attention
        fn.restype = ctypes.c_int
        fn.argtypes = (
            [ctypes.c_void_p] * 4
            + [ctypes.c_int] * 5
            + [ctypes.c_long] * 12
            + [
                ctypes.c_float,
                ctypes.c_int,
            ]
        )
        _lib = lib
        return _lib


def native_attention_status() -> str:
    """'native' when the kernel is in use, else why not (for `infini bench speed` and debugging)."""
    return "native" if _load() is not None else _why_not


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """Causal softmax attention of one segment, or None when the native kernel does not apply.

    q: [B, H, T, 64] bf16, k / v: [B, Hkv, T, 64] bf16 (H a multiple of Hkv; any strides with the last dim
    contiguous). Returns [B, H, T, 64] bf16: a transposed view of a [B, T, H, 64] tensor, so the heads merge
    back into [B, T, H·64] without a copy.
    """
    if q.device.type != "cpu" or not (q.dtype == k.dtype == v.dtype == torch.bfloat16):
        return None
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return None
    B, H, T, d = q.shape
    Hkv = k.shape[1]
    if d != 64 or H % Hkv or k.shape != (B, Hkv, T, d) or v.shape != k.shape:
        return None
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return None
    lib = _load()
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
        float(d) ** -0.5, torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        return None
    return out.transpose(1, 2)
