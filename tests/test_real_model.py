"""The real default model (pulled once into INFINI_HOME). Marked slow; skipped when it cannot be obtained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from infinicli.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real_model_dir() -> Path:
    from infinicli.errors import InfiniError
    from infinicli.models import resolve_model

    try:
        return resolve_model(None)
    except InfiniError as e:
        pytest.skip(f"default model unavailable: {e}")


def test_first_segment_equals_transformers_on_real_weights(real_model_dir):
    from transformers import LlamaForCausalLM

    from infinicli.loading import build_model

    hf = LlamaForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    ours = build_model(real_model_dir, adapter="default", dtype=torch.float32).model
    ids = torch.randint(0, 49152, (1, 64))
    with torch.no_grad():
        ref = hf(ids).logits
        got, _ = ours.forward_segment(ids, ours.empty_memory())
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-3)


def test_chat_with_empty_memory_answers_like_the_base_model(real_model_dir, tmp_path, capsys):
    doc = tmp_path / "q.txt"
    doc.write_text("The capital of France is Paris.")
    code = main(
        ["ask", str(doc), "What is the capital of France?", "--json", "--no-cache", "--max-new-tokens", "20"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and "Paris" in out["answer"]


def test_ask_sample_document_twice_second_from_cache(real_model_dir, capsys):
    doc = REPO / "sample_docs" / "harbor_chronicle.txt"
    q = "When does the ferry to Gull Island leave?"
    assert main(["ask", str(doc), q, "--json", "--no-cache", "--max-new-tokens", "24"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["ask", str(doc), q, "--json", "--max-new-tokens", "24"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["from_cache"] is False and second["from_cache"] is True
    assert first["tokens_read"] == second["tokens_read"] > 15000
    assert second["answer"] == first["answer"]  # the cached memory answers exactly like a fresh read
    assert first["memory_bytes"] == 30 * 3 * (64 * 64 + 64) * 4
