"""Benchmarks (infinicli.bench, `infini bench`) on a tiny random model: haystack layout, the exactness of the
pass-key prefix-state reuse, scoring functions, perplexity, and the commands end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from infinicli import memory as mem
from infinicli.bench import babilong as bl
from infinicli.bench import passkey as pk
from infinicli.bench import ppl as pp
from infinicli.bench.common import document_tokens, format_table, length_label, parse_length, parse_lengths
from infinicli.cli import main
from infinicli.errors import UsageError
from infinicli.readers import SourceDone, SourceInfo, SourceStart, TextPiece
from infinicli.session import Options, Session

S = 32
TINY = ["--adapter", "none", "--segment-len", str(S), "--dtype", "fp32", "--quiet"]

BABI_TAB = """1 Mary moved to the bathroom.
2 Sandra journeyed to the bedroom.
3 Mary got the football there.
4 Where is Mary? \tbathroom\t1
5 John went back to the kitchen.
6 Where is the football? \tbathroom\t3 1
1 Daniel went to the garden.
2 Where is Daniel? \tgarden\t1
"""
BABI_PIPE = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? |bathroom|1
4 Daniel went back to the hallway.
5 Where is Daniel? |hallway|4
"""


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """`--threads` sets torch's global thread count: restore it for the tests that follow."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def engine(tiny_model_dir, infini_home):
    return Session(Options(model=str(tiny_model_dir), adapter="none", segment_len=S, dtype="fp32")).engine


# -- common ---------------------------------------------------------------------------------------------
def test_lengths_parse_and_print():
    assert parse_lengths("2k,8k,32k,1m") == [2048, 8192, 32768, 1 << 20]
    assert parse_length("5000") == 5000 and parse_length("1.5k") == 1536
    assert [length_label(n) for n in (2048, 1 << 20, 5000, 0)] == ["2k", "1m", "5000", "0"]
    assert parse_lengths("0,4k", allow_zero=True) == [0, 4096]
    for bad in ("", "2x", "k", "-1", "0"):
        with pytest.raises(UsageError):
            parse_lengths(bad)


def test_table_is_aligned_markdown():
    t = format_table(["length", "0%"], [["2k", "100"], ["32k", "0"]]).splitlines()
    assert len({len(line) for line in t}) == 1 and t[1].startswith("|---")


# -- pass key -------------------------------------------------------------------------------------------
def test_key_extraction():
    assert pk.extract_key(" 12345. Remember it.") == "12345"
    assert pk.extract_key("123456 then 54321") == "54321"  # a 6-digit number is not a 5-digit one
    assert pk.extract_key("1234 5678") is None
    assert pk.is_correct(" 48213.", 48213) and not pk.is_correct(" 48231.", 48213)
    assert pk.make_key(0, 2048, 50, 1) == pk.make_key(0, 2048, 50, 1)
    assert len({pk.make_key(0, 2048, 50, i) for i in range(20)}) > 15


@pytest.mark.parametrize("target", [700, 1500])
def test_haystack_needle_depth_and_length(engine, target):
    n = pk.filler_sentences_for(engine, target)
    filler_only = document_tokens(engine, pk.haystack_text(n, None, None), pk.DOC_NAME)
    last = -1
    head = len(document_tokens(engine, pk.TASK, pk.DOC_NAME))
    for depth in (0, 25, 50, 75, 100):
        text = pk.haystack_text(n, depth, "31415")
        before, needle, after = text.partition(pk.NEEDLE.format(key="31415"))
        assert needle and before.startswith(pk.TASK)
        k = before.count(".") - pk.TASK.count(".")  # filler sentences before the needle
        assert k == round(n * depth / 100)
        assert after.count(".") == n - k  # the rest of the filler follows, none lost
        toks = document_tokens(engine, text, pk.DOC_NAME)
        total = len(toks) + pk.prompt_tokens(engine)
        assert abs(total - target) <= S, (total, target)
        at = pk.common_prefix(toks, filler_only)
        assert at > last  # deeper needle, later token position
        frac = (at - head) / (len(filler_only) - head)  # needle position as a fraction of the filler tokens
        assert abs(frac - depth / 100) < 0.05, (depth, frac)
        last = at


def test_prefix_reuse_gives_the_same_memory_as_reading_straight(engine):
    n = pk.filler_sentences_for(engine, 900)
    cache = pk.PrefixCache(engine, n)
    probes = [pk.haystack_text(n, d, "11111") for d in (0, 50, 100)]
    cache.fill([cache.boundary(document_tokens(engine, t, pk.DOC_NAME)) for t in probes])
    assert len(cache.states) >= 3
    for depth in (0, 50, 100):
        key = pk.make_key(0, 900, depth, 0)
        text = pk.haystack_text(n, depth, key)
        got, reused = pk.read_sample(engine, cache, document_tokens(engine, text, pk.DOC_NAME))
        if depth:
            assert reused > 5 * S  # the snapshot was used
        info = SourceInfo(pk.DOC_NAME, None, None, "text")
        pieces = [text[i : i + 97] for i in range(0, len(text), 97)]
        events = [SourceStart(info), *(TextPiece(info, p) for p in pieces), SourceDone(info, "", 0, None)]
        want = engine.read(events)
        assert got.memory.segments == want.memory.segments > 0
        assert torch.equal(got.memory.M, want.memory.M) and torch.equal(got.memory.z, want.memory.z)
        assert got.tail == want.tail and got.tokens_read == want.tokens_read


# -- bAbI -----------------------------------------------------------------------------------------------
def test_babi_parser_both_formats():
    s = bl.parse_babi(BABI_TAB)
    assert [(x.story, x.question, x.answer, x.supporting) for x in s] == [
        (0, "Where is Mary?", "bathroom", [1]),
        (0, "Where is the football?", "bathroom", [3, 1]),
        (1, "Where is Daniel?", "garden", [1]),
    ]
    assert s[1].facts == [
        "Mary moved to the bathroom.",
        "Sandra journeyed to the bedroom.",
        "Mary got the football there.",
        "John went back to the kitchen.",
    ]
    assert s[2].facts == ["Daniel went to the garden."]  # a new story starts empty
    p = bl.parse_babi(BABI_PIPE)
    assert [(x.question, x.answer, x.supporting, len(x.facts)) for x in p] == [
        ("Where is Mary?", "bathroom", [1], 2),
        ("Where is Daniel?", "hallway", [4], 3),
    ]


def test_babi_answer_matching():
    assert bl.answer_matches("The bathroom.\nMore text", "bathroom")
    assert bl.answer_matches("\n  BATHROOM", "bathroom")
    assert not bl.answer_matches("Mary is in the kitchen.\nbathroom", "bathroom")  # first line only
    assert not bl.answer_matches("bathrooms", "bathroom")
    assert not bl.answer_matches("", "bathroom")


def test_babilong_haystack_keeps_facts_in_order(engine):
    book = "It was a dark night. The wind howled! Who knew? " * 200
    facts = ["Mary moved to the bathroom.", "John went to the hallway.", "Mary went to the garden."]
    text = bl.build_haystack(engine, bl.book_sentences(book), facts, 800, 20, random.Random(1))
    pos = [text.index(f) for f in facts]
    assert pos == sorted(pos)
    total = len(document_tokens(engine, text, bl.DOC_NAME)) + 20
    assert abs(total - 800) <= S


# -- perplexity -----------------------------------------------------------------------------------------
def test_ppl_three_ways(engine):
    rng = random.Random(3)
    toks = [rng.randrange(3, 300) for _ in range(5 * S + 7)]
    res = pp.perplexities(engine, toks)
    assert res["scored"] == 5 * (S - 1) + 6 and res["segments"] == 6
    for m in pp.METHODS:
        assert math.isfinite(res["methods"][m]["ppl"]) and res["methods"][m]["ppl"] > 1
    first = res["per_segment"][0]
    assert first["memory"] == first["no_memory"] == first["sliding_window"]  # nothing before segment 1
    for blk in engine.model.model.layers:  # closed gates: memory contributes exactly nothing
        blk.self_attn.gate.data.fill_(mem.CLOSED_GATE)
    closed = pp.perplexities(engine, toks)
    assert closed["methods"]["memory"]["nll"] == closed["methods"]["no_memory"]["nll"]
    assert closed["methods"]["sliding_window"]["nll"] != closed["methods"]["no_memory"]["nll"]


# -- commands -------------------------------------------------------------------------------------------
@pytest.fixture
def fake_corpus(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "corpus"
    (c / "babi").mkdir(parents=True)
    (c / "books").mkdir()
    # four stories first: the benchmark asks only about held-out stories (every fifth, infinicli.babi)
    trained = "".join("1 Bill went to the park.\n2 Where is Bill? \tpark\t1\n" for _ in range(4))
    (c / "babi" / "qa1_single-supporting-fact_train.txt").write_text(trained + BABI_PIPE)
    (c / "babi" / "qa2_two-supporting-facts_train.txt").write_text(trained + BABI_TAB)
    prose = "The old prince rose early. Nobody spoke at dinner; the clock ticked! What could be done? " * 60
    (c / "books" / "war_and_peace.txt").write_bytes(prose.encode("cp1252"))
    (c / "books" / "anna_karenina.txt").write_bytes(("Happy families are all alike. " * 400).encode("cp1252"))
    monkeypatch.setenv("INFINI_CORPUS", str(c))
    return c


def _run(tiny_model_dir, capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--model", str(tiny_model_dir), *TINY])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_passkey(tiny_model_dir, infini_home, tmp_path, capsys):
    out_json = tmp_path / "pk.json"
    code, out, err = _run(
        tiny_model_dir, capsys, "bench", "passkey", "--lengths", "400,700", "--samples", "2",
        "--depths", "0,50,100", "--json", str(out_json), "--seed", "7", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "| length |" in out and "| 700" in out and "50%" in out
    d = json.loads(out_json.read_text())
    for key in (
        "benchmark",
        "settings",
        "model",
        "machine",
        "table",
        "table_text",
        "wall_seconds",
        "results",
    ):
        assert key in d
    assert set(d["machine"]) >= {"platform", "cpu_count", "torch"}
    assert len(d["results"]) == 2 * 3 * 2 and set(d["table"]) == {"400", "700"}
    assert set(d["table"]["700"]["depths"]) == {"0", "50", "100"} and "seconds" in d["table"]["700"]
    r = d["results"][0]
    for key in ("length", "depth", "sample", "key", "tokens", "output", "found", "correct", "seconds"):
        assert key in r
    assert d["settings"]["seed"] == 7 and d["model"]["segment_len"] == S
    assert d["model"]["adapter"] == "none" and d["model"]["adapter_packaged"] is None


def test_cli_babilong(tiny_model_dir, infini_home, tmp_path, capsys, fake_corpus):
    out_json = tmp_path / "bl.json"
    code, out, err = _run(
        tiny_model_dir, capsys, "bench", "babilong", "--task", "qa1,qa2", "--lengths", "0,300",
        "--samples", "2", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    assert "qa1" in out and "qa2" in out
    d = json.loads(out_json.read_text())
    assert set(d["table"]["300"]) == {"qa1", "qa2"} and len(d["results"]) == 8
    facts_only = [r for r in d["results"] if r["length"] == 0]
    assert facts_only and all(r["tokens"] < 250 for r in facts_only)  # length 0: the facts alone
    assert {r["story"] for r in d["results"]} == {4}  # only the held-out story is asked about
    assert d["settings"]["haystack"].endswith("war_and_peace.txt")
    for key in ("task", "length", "question", "answer", "tokens", "output", "correct"):
        assert key in d["results"][0]


@pytest.mark.parametrize("bench", ["passkey", "babilong"])
def test_ctrl_c_keeps_the_finished_samples(
    tiny_model_dir, infini_home, tmp_path, capsys, monkeypatch, fake_corpus, bench
):
    """Ctrl-C in the third sample: the two finished ones are printed and written (marked interrupted), and
    the command ends as interrupted (exit 130), not with a traceback and nothing kept."""
    import importlib

    mod = importlib.import_module(f"infinicli.bench.{bench}")
    real, calls = mod.answer, []

    def answer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "answer", answer)
    out_json = tmp_path / "partial.json"
    more = ["--depths", "0,100"] if bench == "passkey" else ["--task", "qa1"]
    code, out, err = _run(
        tiny_model_dir, capsys, "bench", bench, "--lengths", "300,400", "--samples", "2", *more,
        "--json", str(out_json),
    )  # fmt: skip
    assert code == 130 and "Traceback" not in err  # (--quiet: no notice)
    d = json.loads(out_json.read_text())
    assert d["interrupted"] is True and len(d["results"]) == 2
    assert all(r["length"] == 300 for r in d["results"]) and "| 300" in out
    cell = d["table"]["400"] if bench == "passkey" else d["table"]["400"]["qa1"]
    assert cell["accuracy"] is None  # nothing finished at 400 tokens: no number invented


def test_cli_babilong_without_corpus_is_a_usage_error(
    tiny_model_dir, infini_home, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("INFINI_CORPUS", str(tmp_path / "nowhere"))
    code, _, err = _run(tiny_model_dir, capsys, "bench", "babilong", "--lengths", "300")
    assert code == 2 and "INFINI_CORPUS" in err


def test_cli_ppl(tiny_model_dir, infini_home, tmp_path, capsys, fake_corpus):
    out_json = tmp_path / "pp.json"
    code, out, err = _run(tiny_model_dir, capsys, "bench", "ppl", "--tokens", "200", "--json", str(out_json))
    assert code == 0, err
    assert "with memory" in out and "sliding window" in out
    d = json.loads(out_json.read_text())
    assert d["settings"]["book"].endswith("anna_karenina.txt") and d["tokens"] == 200
    assert set(d["methods"]) == {"memory", "no_memory", "sliding_window"}
    assert all(math.isfinite(m["ppl"]) for m in d["methods"].values())
