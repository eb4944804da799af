"""Memory files: a read document's compressive memory, saved as safetensors + JSON metadata.

Tensors: M [L, Hkv, d, d] and z [L, Hkv, d] (fp32), tail [n] (int32: tokens of the unfinished last segment,
so reading can continue exactly). Metadata (safetensors' string header): format marker and version, model and
adapter fingerprints, segment length, update rule, token counts, sources with sizes and hashes, and a SHA-256
of the tensor bytes, checked on load. Files are written to a temporary sibling and renamed into place, so an
existing file is never left half-written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from infinicli.errors import InputError, ResourceError
from infinicli.model import Memory

MAGIC = "infini-memory"
FORMAT_VERSION = 1


@dataclass
class MemoryFileInfo:
    """Metadata of a memory file (what `meta` holds, parsed)."""

    meta: dict

    @property
    def tokens_read(self) -> int:
        return int(self.meta["tokens_read"])


def is_memory_file(path: str | Path) -> bool:
    """Recognise a memory file by content (safetensors header carrying our marker), not by extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100 * 1024 * 1024:
                return False
            header = f.read(min(n, 4096))
    except OSError:
        return False
    return header.startswith(b"{") and MAGIC.encode() in header


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_memory(path: str | Path, memory: Memory, tail: list[int], meta: dict) -> None:
    """Write atomically: temp file in the same folder, fsync, rename over the destination."""
    from safetensors.torch import save

    tensors = {
        "M": memory.M[:, 0].detach().float().cpu().contiguous(),
        "z": memory.z[:, 0].detach().float().cpu().contiguous(),
        "tail": torch.tensor(list(tail), dtype=torch.int32),
    }
    full = dict(meta)
    full.update(
        infini_format=MAGIC,
        format_version=FORMAT_VERSION,
        segments_written=memory.segments,
        sha256=_digest(tensors),
        saved_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    header = {"__infini__": json.dumps(full)}
    data = save(tensors, metadata=header)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _resource(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _resource(path, e) from None


def _resource(path: Path, e: OSError) -> ResourceError:
    if e.errno == errno.ENOSPC:
        return ResourceError(f"{path}: disk full; the memory file was not written (any old file is intact)")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return ResourceError(f"{path}: cannot write here (read-only or no permission)")
    return ResourceError(f"{path}: cannot write memory file ({e.strerror or e})")


def load_memory(path: str | Path, device: torch.device | str = "cpu") -> tuple[Memory, list[int], dict]:
    """Read and verify a memory file → (memory with batch 1, tail tokens, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read memory file ({e.strerror})") from None
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["__infini__"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: damaged memory file (unreadable header)") from None
    if meta.get("infini_format") != MAGIC:
        raise InputError(f"{path}: not an infini memory file")
    version = int(meta.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: memory file format {version} is newer than this infini understands ({FORMAT_VERSION});"
            " upgrade infinicli"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError):
        raise InputError(f"{path}: damaged memory file (truncated or corrupted tensors)") from None
    if set(tensors) != {"M", "z", "tail"} or _digest(tensors) != meta.get("sha256"):
        raise InputError(f"{path}: damaged memory file (checksum mismatch)")
    memory = Memory(
        tensors["M"].unsqueeze(1).to(device),
        tensors["z"].unsqueeze(1).to(device),
        int(meta["segments_written"]),
    )
    return memory, tensors["tail"].tolist(), meta


def check_compatible(
    path: str | Path,
    meta: dict,
    *,
    model_fingerprint: str,
    adapter_fingerprint: str,
    segment_len: int,
    update_rule: str,
    cut_window: int = 0,
) -> None:
    """Refuse (one line) a memory file made by another model, adapter or segment length."""
    if meta.get("model_fingerprint") != model_fingerprint:
        raise InputError(
            f"{path}: memory was made by another model ({meta.get('model', '?')}); read the document again"
            " with this model"
        )
    if meta.get("adapter_fingerprint") != adapter_fingerprint:
        raise InputError(f"{path}: memory was made with another adapter; read the document again")
    if int(meta.get("segment_len", -1)) != segment_len:
        raise InputError(
            f"{path}: memory was made with segment length {meta.get('segment_len')}, not {segment_len};"
            f" use --segment-len {meta.get('segment_len')} or read again"
        )
    made = int(meta.get("cut_window", 0))  # files from before text-boundary cuts: fixed cuts
    if made != cut_window:
        raise InputError(
            f"{path}: memory was made with cut window {made}, not {cut_window}; use --cut-window {made}"
            " or read again"
        )
    if meta.get("update_rule") != update_rule:
        raise InputError(f"{path}: memory was made with the {meta.get('update_rule')} update rule")
