"""Streaming engine: segmentation, bounded memory, interruption and exact resume."""

from __future__ import annotations

import tracemalloc

import pytest
import torch

from infinicli.session import Options, Session

WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


def text_of(n_words: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=g).tolist()
    return " ".join(WORDS[i] for i in idx) + "\n"


@pytest.fixture
def session(tiny_model_dir, infini_home):
    return Session(Options(model=str(tiny_model_dir), adapter="none", segment_len=32))


@pytest.mark.parametrize("window", [None, 0])
def test_segments_concatenate_to_the_whole_tokenization(tiny_model_dir, infini_home, tmp_path, window):
    session = Session(Options(model=str(tiny_model_dir), adapter="none", segment_len=32, cut_window=window))
    p = tmp_path / "a.txt"
    p.write_text(text_of(3000))
    e = session.engine
    assert e.cut_window == (4 if window is None else 0)  # default: an eighth of the segment
    written: list[int] = []
    lengths: list[int] = []
    orig = e.write_segment

    def spy(state, n):
        lengths.append(n)
        written.extend(state.tail[:n])
        orig(state, n)

    e.write_segment = spy
    res = session.memory_for([str(p)])
    st = res.state
    from infinicli.engine import file_marker

    expected = e.tok.encode_with_specials(e.prefix) + e.tok.encode(file_marker(str(p)) + p.read_text())
    assert written + st.tail == expected
    assert st.tokens_read == len(expected) and len(st.tail) <= 32
    if window == 0:
        assert set(lengths) == {32}
    else:  # words and spaces: a segment ends early only at a word end (whitespace on one side of the cut)
        assert all(28 <= n <= 32 for n in lengths) and min(lengths) < 32
        ends = [sum(lengths[: i + 1]) for i, n in enumerate(lengths) if n < 32]
        around = [e.tok.decode(expected[c - 1 : c + 1]) for c in ends]
        assert ends and all(" " in pair or "\n" in pair for pair in around), around


def _peak_python_bytes(session, path) -> int:
    tracemalloc.start()
    session.memory_for([str(path)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_input_length(session, tmp_path):
    e = session.engine
    per_segment = len(e.tok.encode(text_of(2000))) / 2000  # tokens per word
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text(text_of(int(20 * 32 / per_segment)))
    big.write_text(text_of(int(200 * 32 / per_segment)))
    session.opts.use_cache = False
    session.memory_for([str(small)])  # warm-up: first-call allocations
    p_small = _peak_python_bytes(session, small)
    p_big = _peak_python_bytes(session, big)
    st = session.memory_for([str(big)]).state
    assert st.memory.segments >= 190
    # 10x the input, same working set: the engine holds one segment and the tokenizer's bounded carry
    assert big.stat().st_size > 8 * small.stat().st_size
    assert p_big < 1.3 * p_small + 32 * 1024, (p_small, p_big)


def test_interrupted_read_resumes_to_the_same_memory(tiny_model_dir, infini_home, tmp_path):
    p = tmp_path / "book.txt"
    p.write_text(text_of(4000, seed=3))
    opts = dict(model=str(tiny_model_dir), adapter="none", segment_len=32)
    full = Session(Options(**opts, use_cache=False)).memory_for([str(p)]).state

    s1 = Session(Options(**opts, use_cache=False))
    e = s1.engine
    calls = {"n": 0}
    orig = e.write_segment

    def interrupting(state, n):
        calls["n"] += 1
        if calls["n"] == 17:
            raise KeyboardInterrupt
        orig(state, n)

    e.write_segment = interrupting
    with pytest.raises(KeyboardInterrupt):
        s1.memory_for([str(p)])
    s2 = Session(Options(**opts, use_cache=False, resume=True))
    resumed = s2.memory_for([str(p)]).state
    assert resumed.memory.segments == full.memory.segments
    assert resumed.tail == full.tail and resumed.tokens_read == full.tokens_read
    torch.testing.assert_close(resumed.memory.M, full.memory.M, rtol=0, atol=0)
    torch.testing.assert_close(resumed.memory.z, full.memory.z, rtol=0, atol=0)
    assert [s["sha256"] for s in resumed.sources] == [s["sha256"] for s in full.sources]


def test_resume_without_interrupted_read_is_a_usage_error(session, tmp_path):
    from infinicli.errors import UsageError

    p = tmp_path / "a.txt"
    p.write_text(text_of(100))
    session.opts.resume = True
    with pytest.raises(UsageError, match="nothing to resume"):
        session.memory_for([str(p)])


def test_segments_equal_whole_tokenization_for_any_text(tiny_model_dir, infini_home, tmp_path_factory):
    """Property: for any text and segment length, the segments written + the tail are exactly the
    tokenization of the whole framed text (the engine never loses, repeats or re-splits a token)."""
    import os

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from infinicli.engine import file_marker
    from infinicli.readers import TextPiece, read_sources

    session = Session(Options(model=str(tiny_model_dir), adapter="none", segment_len=16, use_cache=False))
    e = session.engine
    orig = e.write_segment
    d = tmp_path_factory.mktemp("prop")

    @settings(max_examples=int(os.environ.get("INFINI_FUZZ_EXAMPLES", "40")), deadline=None)
    @given(
        text=st.text(min_size=1, max_size=3000),
        seg=st.integers(min_value=16, max_value=64),
        window=st.integers(min_value=0, max_value=15),
    )
    def check(text: str, seg: int, window: int) -> None:
        p = d / "t.txt"
        p.write_text(text, encoding="utf-8")
        try:
            pieces = "".join(ev.text for ev in read_sources([str(p)]) if isinstance(ev, TextPiece))
        except Exception:
            return  # unreadable inputs (e.g. only whitespace → empty) are the readers' business
        written: list[int] = []

        def spy(state, n):
            written.extend(state.tail[:n])
            orig(state, n)

        e.cut_window_setting = window
        e.segment_len = seg
        e.write_segment = spy
        try:
            st_ = e.read(read_sources([str(p)], chunk_chars=max(1024, 4 * seg)))
        finally:
            e.write_segment = orig
        expected = e.prefix_ids + e.tok.encode(file_marker(str(p)) + pieces)
        assert written + st_.tail == expected
        assert len(st_.tail) <= seg
        # the cuts are a function of the tokens alone, whatever pieces the reader delivered them in
        ends = e.segmenter.cuts(expected)
        assert len(written) == (ends[-1] if ends else 0)
        assert all(seg - window <= b - a <= seg for a, b in zip([0, *ends], ends, strict=False))

    check()


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_is_said(tiny_model_dir, infini_home, monkeypatch, native):
    """--dtype bf16 is honoured, with a notice where the CPU only emulates bf16 (slower than fp32)."""
    from infinicli import loading

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: native)
    notes: list[str] = []
    s = Session(
        Options(model=str(tiny_model_dir), adapter="none", dtype="bf16", device="cpu"), on_notice=notes.append
    )
    assert s.engine.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert any("no native bf16" in n for n in notes) is not native
