"""Shared test fixtures: tiny random-weight Llama models, and the paths of optional real data."""

from __future__ import annotations

import os
from pathlib import Path

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
