"""scripts/bench_paired.py: questions matched across two adapters' bench JSON files, and the sign test."""

from __future__ import annotations

import json
from pathlib import Path


def load_script():
    from conftest import load_script as load

    return load("bench_paired")


def test_sign_test_values():
    bp = load_script()
    assert bp.sign_test(0, 0) == 1.0
    assert bp.sign_test(3, 3) == 1.0
    assert abs(bp.sign_test(0, 5) - 2 / 32) < 1e-12  # both tails of a 5-0 split
    assert abs(bp.sign_test(8, 11) - bp.sign_test(11, 8)) < 1e-12
    assert bp.sign_test(1, 9) < 0.05 < bp.sign_test(2, 8)


def _write(path: Path, seed: int, rows: list[dict], benchmark: str = "babilong") -> None:
    path.write_text(json.dumps({"benchmark": benchmark, "settings": {"seed": seed}, "results": rows}))


def test_rows_pair_by_seed_task_length_and_sample(tmp_path, capsys):
    bp = load_script()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()

    def qa(task, sample, correct, length=4096):
        return {"task": task, "length": length, "sample": sample, "correct": correct}

    # seed 0: A right on samples 0-2, B on 1-3; qa2 and 32K are their own groups
    _write(a / "bl4k_s0.json", 0, [qa("qa1", i, i < 3) for i in range(4)] + [qa("qa2", 0, True)])
    _write(b / "bl4k_s0.json", 0, [qa("qa1", i, i > 0) for i in range(4)] + [qa("qa2", 0, False)])
    # seed 1 exists for A only: same sample indices, other stories, so they must stay unmatched
    _write(a / "bl4k_s1.json", 1, [qa("qa1", i, True) for i in range(4)])
    _write(a / "bl32k_s0.json", 0, [qa("qa1", 0, False, 32768)])
    _write(b / "bl32k_s0.json", 0, [qa("qa1", 0, True, 32768)])
    pk = {"depth": 50, "sample": 0, "length": 2048}
    _write(a / "pk8k_s1.json", 1, [{**pk, "correct": True}], "passkey")
    _write(b / "pk8k_s1.json", 1, [{**pk, "correct": True}], "passkey")
    (a / "chat.json").write_text("{}")  # not a bl*/pk* file: ignored

    A, B = bp.load([a]), bp.load([b])
    assert set(A) == {"qa1 4k", "qa2 4k", "qa1 32k", "passkey 2k"}
    c = bp.compare(A["qa1 4k"], B["qa1 4k"])
    assert (c["questions"], c["a"], c["b"], c["only_a"], c["only_b"], c["unmatched"]) == (4, 3, 3, 1, 1, 4)
    assert bp.compare(A["qa2 4k"], B["qa2 4k"])["only_a"] == 1
    assert bp.compare(A["qa1 32k"], B["qa1 32k"])["only_b"] == 1

    bp.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "| qa1 4k | 4 | 3 | 3 | 1 | 1 | 1.000 | (4 unmatched)" in out
    assert out.index("passkey 2k") < out.index("qa1 4k") < out.index("qa1 32k")
