"""The `infini` commands end to end on a tiny random-weight model (the real model is behind `slow`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TEXT = "Alpha beta gamma. The pass key is 12345. Remember it.\n" * 40


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text(TEXT)
    return p


def test_ask_json_has_the_documented_fields(run, doc):
    code, out, err = run("ask", str(doc), "What is the pass key?", "--json", "--max-new-tokens", "5")
    assert code == 0, err
    obj = json.loads(out)  # exactly one JSON object on stdout
    for key in ("answer", "tokens_read", "segments", "seconds", "memory_bytes", "from_cache", "sources"):
        assert key in obj
    assert obj["from_cache"] is False
    assert obj["segments"] >= 10 and obj["tokens_read"] >= 28 * obj["segments"]  # segments of 28-32 tokens
    assert obj["sources"][0]["name"] == str(doc) and len(obj["sources"][0]["sha256"]) == 64
    assert isinstance(obj["answer"], str)


def test_second_question_reuses_the_cached_memory(run, doc):
    code, out1, _ = run("ask", str(doc), "q1", "--json", "--max-new-tokens", "3")
    assert code == 0
    code, out2, err = run("ask", str(doc), "q2", "--json", "--max-new-tokens", "3")
    assert code == 0
    a, b = json.loads(out1), json.loads(out2)
    assert b["from_cache"] is True and b["tokens_read"] == a["tokens_read"]
    code, out3, _ = run("ask", str(doc), "q2", "--json", "--max-new-tokens", "3", "--no-cache")
    assert json.loads(out3)["from_cache"] is False
    doc.write_text(TEXT + "changed\n")  # a changed input is read again
    code, out4, _ = run("ask", str(doc), "q2", "--json", "--max-new-tokens", "3")
    assert json.loads(out4)["from_cache"] is False


def test_read_then_ask_the_memory_file(run, doc, tmp_path):
    mem = tmp_path / "doc.memory"  # recognised by content, not by extension
    code, _, err = run("read", str(doc), "-o", str(mem))
    assert code == 0, err
    assert mem.stat().st_size > 0
    code, out, err = run("ask", str(mem), "What is the pass key?", "--json", "--max-new-tokens", "4")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["from_cache"] is True and obj["sources"][0]["name"] == str(doc)
    # the same answer as asking the document itself (greedy)
    code, out2, _ = run("ask", str(doc), "What is the pass key?", "--json", "--max-new-tokens", "4")
    assert json.loads(out2)["answer"] == obj["answer"]


def test_ask_reads_stdin_when_no_path(run):
    code, out, err = run("ask", "What failed first?", "--json", "--max-new-tokens", "2", stdin=TEXT.encode())
    assert code == 0, err
    obj = json.loads(out)
    assert obj["sources"][0]["name"] == "<stdin>" and obj["tokens_read"] > 100
    code, out, _ = run("ask", "What failed first?", "--json", "--max-new-tokens", "2", stdin=TEXT.encode())
    assert json.loads(out)["from_cache"] is True  # same bytes on stdin → same memory


def test_summarize_a_folder_streams_text_to_stdout(run, tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_text("12:00 disk full on db1\n" * 30)
    (d / "b.log").write_text("12:01 write refused\n" * 30)
    code, out, err = run("summarize", str(d), "--max-new-tokens", "5")
    assert code == 0, err
    assert out.endswith("\n")
    assert "2 source(s)" in err


def test_usage_errors(run, doc):
    code, _, err = run("ask", str(doc), "   ")
    assert code == 2 and "question is empty" in err
    code, _, err = run("ask", str(doc), "q", "--max-new-tokens", "0")
    assert code == 2


def test_unknown_model_is_a_model_error(run, doc):
    code, _, err = run("ask", str(doc), "q", "--model", "no-such-model", model=False)
    assert code == 4 and err.count("\n") == 1 and "unknown model" in err and "Traceback" not in err


def test_memory_from_another_model_is_refused(run, doc, tmp_path, tiny_model_dir):
    from conftest import make_tiny_model_dir

    other = make_tiny_model_dir(tmp_path / "other-model", seed=1)
    mem = tmp_path / "doc.mem"
    assert run("read", str(doc), "-o", str(mem))[0] == 0
    code, _, err = main_with(
        run, "ask", str(mem), "q", "--model", str(other), "--adapter", "none", "--segment-len", "32"
    )
    assert code == 3 and "another model" in err


def main_with(run, *args):
    return run(*args, model=False)


def test_memory_with_other_segment_length_is_refused(run, doc, tmp_path, tiny_model_dir):
    mem = tmp_path / "doc.mem"
    assert run("read", str(doc), "-o", str(mem))[0] == 0
    code, _, err = main_with(
        run, "ask", str(mem), "q", "--model", str(tiny_model_dir), "--adapter", "none", "--segment-len", "64"
    )
    assert code == 3 and "segment length 32" in err


def test_memory_with_other_cut_window_is_refused_and_the_hint_works(run, doc, tmp_path):
    mem = tmp_path / "doc.mem"
    assert run("read", str(doc), "-o", str(mem), "--cut-window", "0")[0] == 0
    code, _, err = run("ask", str(mem), "q", "--max-new-tokens", "2")
    assert code == 3 and "cut window 0, not 4" in err and "--cut-window 0" in err
    assert run("ask", str(mem), "q", "--max-new-tokens", "2", "--cut-window", "0")[0] == 0


def test_cut_window_must_be_below_the_segment_length(run, doc):
    code, _, err = run("ask", str(doc), "q", "--cut-window", "32")
    assert code == 2 and "--cut-window" in err and "Traceback" not in err


def test_damaged_memory_file_is_refused(run, doc, tmp_path):
    mem = tmp_path / "doc.mem"
    assert run("read", str(doc), "-o", str(mem))[0] == 0
    data = bytearray(mem.read_bytes())
    data[-10] ^= 0xFF  # flip a bit inside the tensors
    mem.write_bytes(bytes(data))
    code, _, err = run("ask", str(mem), "q")
    assert code == 3 and "checksum" in err and err.count("error") == 1
    mem.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    code, _, err = run("ask", str(mem), "q")
    assert code == 3 and "damaged memory file" in err


def test_help_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "infinicli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("ask", "summarize", "read", "models"):
        assert cmd in r.stdout
