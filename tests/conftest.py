"""Shared test fixtures: tiny random-weight Llama models, and the paths of optional real data."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    return Path(os.environ.get("INFINI_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture
def corpus() -> Path:
    c = corpus_dir()
    if not c.is_dir():
        pytest.skip("../shared/corpus is not present")
    return c


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py imported as a module (the scripts are not a package), registered under `name`."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_hf_config(**kw):
    from transformers import LlamaConfig

    base = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        attn_implementation="eager",
    )
    base.update(kw)
    return LlamaConfig(**base)


@pytest.fixture
def tiny_pair():
    """(transformers LlamaForCausalLM, our InfiniLlama with the same weights), fp32, eval mode."""
    from transformers import LlamaForCausalLM

    from infinicli.model import InfiniConfig, InfiniLlama, ModelConfig

    torch.manual_seed(0)
    hf_cfg = tiny_hf_config()
    hf = LlamaForCausalLM(hf_cfg).eval()
    ours = InfiniLlama(ModelConfig.from_hf(hf_cfg.to_dict()), InfiniConfig(segment_len=16)).eval()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert all(k.endswith(".gate") for k in missing), missing
    assert all(k == "lm_head.weight" for k in unexpected), unexpected
    return hf, ours


CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "It was the best of times, it was the worst of times; the server log said: ERROR disk full!",
    "Pierre's father was Count Bezukhov. Où est la bibliothèque? 日本語のテキスト 🙂",
    "def main():\n    return 42\n\n\tTabs and   spaces   everywhere.\r\n",
]


def make_tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A complete tiny model folder: random Llama weights (safetensors), a trained byte-level BPE
    tokenizer.json with ChatML specials, tokenizer_config.json and a chat template."""
    import json

    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TRAIN_TEXT * 20, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>"})
    )
    (path / "chat_template.jinja").write_text(CHATML)
    torch.manual_seed(seed)
    cfg = tiny_hf_config(vocab_size=tok.get_vocab_size(), bos_token_id=1, eos_token_id=2)
    hf = LlamaForCausalLM(cfg)
    sd = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    d = cfg.to_dict()
    d.pop("attn_implementation", None)
    (path / "config.json").write_text(json.dumps(d))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def infini_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("INFINI_HOME", str(home))
    return home


@pytest.fixture
def run(tiny_model_dir, infini_home, capsys, monkeypatch):
    """Run `infini ARGS` on the tiny model in-process → (exit code, stdout, stderr)."""
    import io
    import sys

    from infinicli.cli import main

    def _run(*args: str, stdin: bytes | None = None, model: bool = True):
        argv = list(args)
        if model:
            argv += ["--model", str(tiny_model_dir), "--adapter", "none", "--segment-len", "32"]
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return _run
