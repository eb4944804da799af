"""Segment cuts at text boundaries: which boundary wins, and that cuts depend on the tokens alone."""

from __future__ import annotations

import random

import pytest

from infinicli.segmenting import (
    LINE,
    NONE,
    PARAGRAPH,
    SENTENCE,
    SENTENCE_LINE,
    WORD,
    Segmenter,
    for_tokenizer,
    token_classes,
)

# a toy vocabulary: ids are indices
VOCAB = [b"w", b" w", b".", b"\n", b"\n\n", b" ", b'."', b"3.", b"\n \n", b" W", b".\n"]
W, SW, DOT, NL, NL2, SP, DOTQ, NUMDOT, NLSPNL, SCAP, DOTNL = range(len(VOCAB))


def seg(size: int, window: int) -> Segmenter:
    return Segmenter(size, window, token_classes(VOCAB))


def test_token_classes():
    c = token_classes(VOCAB)
    assert [c.newlines[i] for i in (W, NL, NL2, NLSPNL, DOTNL, SP)] == [0, 1, 2, 2, 1, 0]
    assert [c.sentence[i] for i in (W, DOT, DOTQ, NUMDOT, DOTNL, NL)] == [0, 1, 1, 1, 1, 0]
    assert [c.starts_space[i] for i in (W, SW, NL, SP)] == [0, 1, 1, 1]
    assert [c.blank[i] for i in (W, NL, NL2, SP, DOT)] == [0, 1, 1, 1, 0]
    assert [c.opens[i] for i in (W, SW, SCAP, DOT)] == [0, 0, 1, 0]


def test_strength_of_a_cut():
    s = seg(8, 4)
    assert s.boundary([W, W], 1) == NONE  # inside a word
    assert s.boundary([W, SW], 1) == WORD  # the next token starts a word
    assert s.boundary([SP, W], 1) == WORD  # after a space
    assert s.boundary([DOT, SCAP], 1) == SENTENCE  # ". The"
    assert s.boundary([DOT, SP, W], 1) == SENTENCE  # ". " then anything: the space is a token of its own
    assert s.boundary([DOT, SW], 1) == WORD  # "part-00296. blk_..." in a log: no capital, no sentence
    assert s.boundary([DOT, W], 1) == NONE  # "3.14": a dot inside a number
    assert s.boundary([DOTQ, SCAP], 1) == SENTENCE  # ." then a new sentence
    assert s.boundary([W, NL, W], 2) == LINE
    assert s.boundary([DOT, NL, W], 2) == SENTENCE_LINE  # a line that ends a sentence
    assert s.boundary([W, DOTNL, W], 2) == SENTENCE_LINE
    assert s.boundary([NL, NL, W], 2) == PARAGRAPH  # a blank line made of two newline tokens
    assert s.boundary([W, NL2, W], 2) == PARAGRAPH
    assert s.boundary([W, NLSPNL, W], 2) == PARAGRAPH


def test_the_strongest_boundary_in_the_window_wins_and_the_latest_of_equals():
    s = seg(10, 4)  # cuts at 6..10 are candidates; the decision reads 11 tokens
    base = [W] * 11
    assert s.cut(base[:10]) is None  # one token short of deciding
    assert s.cut(base) == 10  # nothing in the window: the fixed cut
    words = [W, SW] * 6
    assert s.cut(words[:11]) == 9  # the latest word end (tokens[9] = " w")
    line = [W] * 6 + [NL, W, SW, W, SW]  # a line end (cut 7) beats later word ends
    assert s.cut(line) == 7
    sent = [W] * 5 + [NL, DOT, SCAP, W, SW, W]  # a sentence end (cut 7) beats an earlier line end (6):
    assert s.cut(sent) == 7  # hard-wrapped prose ends lines inside sentences
    sline = [W] * 6 + [DOTNL, W, DOT, SCAP, W]  # a line that ends a sentence beats a later sentence end
    assert s.cut(sline) == 7
    para = [W] * 6 + [NL2, W, DOTNL, W, W]
    assert s.cut(para) == 7
    early = [W, W, NL2] + [W] * 8  # a paragraph end before the window is not a candidate
    assert s.cut(early) == 10
    assert Segmenter(10, 0).cut(base[:10]) == 10  # fixed cuts need no look-ahead


def test_cuts_are_a_function_of_the_tokens_alone():
    rng = random.Random(0)
    s = seg(16, 5)
    toks = [rng.choice(range(len(VOCAB))) for _ in range(2000)]
    ends = s.cuts(toks)
    assert all(11 <= b - a <= 16 for a, b in zip([0, *ends], ends, strict=False))
    # the engine's way: a tail fed in pieces of any size, a segment cut whenever the tail decides one
    for piece in (1, 7, 100):
        tail, pos, got = [], 0, []
        for i in range(0, len(toks), piece):
            tail.extend(toks[i : i + piece])
            while (n := s.cut(tail)) is not None:
                pos += n
                got.append(pos)
                tail = tail[n:]
        assert got == ends


def test_bad_settings():
    with pytest.raises(ValueError):
        Segmenter(16, 16, token_classes(VOCAB))
    with pytest.raises(ValueError):
        Segmenter(16, 4)  # a window needs the token classes


def test_a_line_near_the_segment_end_goes_whole_to_the_next_segment(tiny_model_dir):
    """The pass-key case: a needle line starting a few tokens before the fixed cut is not split."""
    from infinicli.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    S = 64
    head = tok.encode("lorem ipsum dolor sit amet " * 40)
    needle = tok.encode("\nThe pass key is 12345. Remember it. 12345 is the pass key.\n")
    for start in range(S - 8, S - 1):  # the needle's newline at 56..62: a fixed cut would split it
        toks = head[:start] + needle + head
        fixed = Segmenter(S, 0).cuts(toks)
        assert fixed[0] == S and start < S < start + len(needle)
        cut = for_tokenizer(tok, S).cuts(toks)[0]
        assert cut == start + 1  # right after the newline that opens the needle line
        assert toks[cut : cut + len(needle) - 1] == needle[1:]
