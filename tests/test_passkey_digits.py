"""scripts/passkey_digits.py: the kinds of pass-key misses and the per-digit counts over a bench JSON file."""

from __future__ import annotations

import json


def load_script():
    from conftest import load_script as load

    return load("passkey_digits")


def test_miss_kinds():
    pd = load_script()
    assert pd.miss_kind("12345", "12345") == "right"
    assert pd.miss_kind("12345", "12349") == "one digit replaced"
    assert pd.miss_kind("12345", "12354") == "digits reordered"
    assert pd.miss_kind("12345", "1234") == "a digit dropped"
    assert pd.miss_kind("12345", "123455") == "a digit added"
    assert pd.miss_kind("12345", "") == "other"
    assert pd.miss_kind("12345", "99999") == "other"


def test_counts_only_needles_read_from_memory(tmp_path, capsys):
    pd = load_script()

    def row(key, output, needle_token):
        return {"key": key, "output": output, "needle_token": needle_token, "segments_in_memory": 2}

    results = [
        row("11111", " 11111.", 10),  # right, from memory
        row("22222", " 2222.", 1500),  # dropped digit, from memory (segment 1 of 1024)
        row("33333", " 99999.", 2100),  # in the final segment: left out
    ]
    path = tmp_path / "pk.json"
    path.write_text(json.dumps({"model": {"segment_len": 1024}, "results": results}))
    pd.main([str(path)])
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]  # spacing aside
    assert out.startswith("2 samples with the needle in memory (1 in the final segment left out)")
    assert "right 1 50.0 %" in lines and "a digit dropped 1 50.0 %" in lines
    assert lines[-1] == "digit right at its position: 1: 100 % 2: 100 % 3: 100 % 4: 100 % 5: 50 %"


def test_by_segment_counts_each_needle_segment(tmp_path, capsys):
    pd = load_script()

    def row(key, output, needle_token):
        return {
            "length": 4096,
            "key": key,
            "output": output,
            "needle_token": needle_token,
            "segments_in_memory": 3,
        }

    results = [
        row("11111", " 11111.", 10),  # segment 0, right
        row("22222", " 22222.", 1030),  # segment 1, right
        row("33333", " 33335.", 2000),  # segment 1, wrong
        row("44444", " 99999.", 3500),  # final segment: left out
    ]
    path = tmp_path / "pk.json"
    path.write_text(json.dumps({"model": {"segment_len": 1024}, "results": results}))
    pd.main(["--by-segment", str(path)])
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines[-2:] == ["4096 0 3 1 / 1", "4096 1 2 1 / 2"]
