"""Segment cuts at text boundaries: which boundary wins, and that cuts depend on the tokens alone."""

from __future__ import annotations

import random

import pytest

from infinicli.segmenting import (
    LINE,
    NONE,
    PARAGRAPH,
    SENTENCE,
    WORD,
    Segmenter,
    for_tokenizer,
    token_classes,
)

# a toy vocabulary: ids are indices
VOCAB = [b"w", b" w", b".", b"\n", b"\n\n", b" ", b'."', b"3.", b"\n \n"]
W, SW, DOT, NL, NL2, SP, DOTQ, NUMDOT, NLSPNL = range(len(VOCAB))


def seg(size: int, window: int) -> Segmenter:
    return Segmenter(size, window, token_classes(VOCAB))


def test_token_classes():
    ends, starts, blank = token_classes(VOCAB)
    assert [ends[i] for i in range(len(VOCAB))] == [
        NONE, NONE, SENTENCE, LINE, PARAGRAPH, WORD, SENTENCE, SENTENCE, PARAGRAPH
    ]  # fmt: skip
    assert [starts[i] for i in (W, SW, NL, SP)] == [0, 1, 1, 1]
    assert [blank[i] for i in (W, NL, NL2, SP, DOT)] == [0, 1, 1, 1, 0]


def test_strength_of_a_cut():
    s = seg(8, 4)
    assert s.boundary([W, W], 1) == NONE  # inside a word
    assert s.boundary([W, SW], 1) == WORD  # the next token starts a word
    assert s.boundary([SP, W], 1) == WORD  # after a space
    assert s.boundary([DOT, SW], 1) == SENTENCE
    assert s.boundary([DOT, W], 1) == NONE  # "3.14": a dot inside a number is no sentence end
    assert s.boundary([DOTQ, SW], 1) == SENTENCE  # ." then a new word
    assert s.boundary([W, NL, W], 2) == LINE
    assert s.boundary([NL, NL, W], 2) == PARAGRAPH  # a blank line made of two newline tokens
    assert s.boundary([W, NL2, W], 2) == PARAGRAPH


def test_the_strongest_boundary_in_the_window_wins_and_the_latest_of_equals():
    s = seg(10, 4)  # cuts at 6..10 are candidates; the decision reads 11 tokens
    base = [W] * 11
    assert s.cut(base[:10]) is None  # one token short of deciding
    assert s.cut(base) == 10  # nothing in the window: the fixed cut
    words = [W, SW] * 6
    assert s.cut(words[:11]) == 9  # the latest word end (tokens[9] = " w")
    sent = [W] * 6 + [DOT, SW, W, W, SW, W]  # a sentence end after token 6, word ends later
    assert s.cut(sent) == 7
    line = [W] * 5 + [NL, DOT, SW, W, SW, W]  # a line end (cut 6) beats the later sentence end
    assert s.cut(line) == 6
    para = [W] * 6 + [NL2, W, NL, W, W]
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
