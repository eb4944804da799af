"""Where a segment ends: at `size` tokens, or at the best text boundary among the last `window` tokens.

A fixed cut every `size` tokens splits whatever sits across it: a sentence, a number, a pass key's second
mention. The part after the cut is written to memory by a segment whose local attention never saw the part
before it (measured in docs/BENCHMARKS.md, session 21: a pass key cut this way was found 0 of 6 times at 32K
where whole needles around it were found 10 of 14). So the engine ends a segment early, at most `window`
tokens before `size`, at the strongest boundary it finds there, the latest one of that strength:

    paragraph end  >  line end  >  sentence end  >  word end  >  (none: the fixed cut at `size`)

The choice looks only at the first `size + 1` tokens of the unread tail (the extra token tells whether the
next segment would start a new word), so the cuts are a function of the token stream alone: reading in
chunks of any size, resuming, or reusing a cached prefix gives the same segments. `window = 0` is the fixed
cut (what training uses: its batches need segments of equal length).
"""

from __future__ import annotations

from collections.abc import Sequence

NONE, WORD, SENTENCE, LINE, PARAGRAPH = range(5)

_SENTENCE_END = (b".", b"!", b"?")
_CLOSERS = b"\"')]\xe2\x80\x9d\xe2\x80\x99"  # a sentence may end inside quotes or brackets: ." .” .) .'


def token_classes(token_bytes: Sequence[bytes]) -> tuple[bytearray, bytearray, bytearray]:
    """Per token id: (the boundary a cut right after it makes, whether it starts with whitespace, whether it
    is only whitespace).

    The first is PARAGRAPH (its text ends in whitespace holding two or more newlines), LINE (one), SENTENCE
    (ends with . ! ? maybe followed by closing quotes or brackets: a sentence end when the next token starts
    with whitespace), WORD (ends with whitespace) or NONE.
    """
    n = len(token_bytes)
    ends, starts_space, blank = bytearray(n), bytearray(n), bytearray(n)
    for i, b in enumerate(token_bytes):
        if not b:
            continue
        starts_space[i] = b[:1].isspace()
        blank[i] = b.isspace()
        body = b.rstrip()
        newlines = b[len(body) :].count(b"\n")
        if newlines >= 2:
            ends[i] = PARAGRAPH
        elif newlines == 1:
            ends[i] = LINE
        elif body == b and body.rstrip(_CLOSERS).endswith(_SENTENCE_END):
            ends[i] = SENTENCE
        elif body != b:
            ends[i] = WORD
    return ends, starts_space, blank


class Segmenter:
    """Decides the length of each segment written to memory (see the module docstring)."""

    def __init__(
        self, size: int, window: int = 0, classes: tuple[bytearray, bytearray, bytearray] | None = None
    ):
        if size < 1:
            raise ValueError("segment size must be positive")
        if not 0 <= window < size:
            raise ValueError(f"the cut window must be in [0, {size - 1}]")
        if window and classes is None:
            raise ValueError("a cut window needs the tokenizer's token classes")
        self.size = int(size)
        self.window = int(window)
        self._ends, self._starts_space, self._blank = classes or (bytearray(), bytearray(), bytearray())

    @property
    def lookahead(self) -> int:
        """Tokens beyond `size` that a decision looks at (the next segment's first token)."""
        return 1 if self.window else 0

    def boundary(self, tokens: Sequence[int], n: int) -> int:
        """The strength of a cut after tokens[:n] (tokens[n] must exist)."""
        ends, starts = self._ends, self._starts_space
        a, b = tokens[n - 1], tokens[n]
        c = ends[a]
        if c == LINE and n >= 2 and self._blank[a] and ends[tokens[n - 2]] >= LINE:
            return PARAGRAPH  # a newline token after a line end: a blank line
        next_space = starts[b]
        if c == SENTENCE:
            return SENTENCE if next_space else NONE
        if c == NONE and next_space:
            return WORD
        return c

    def cut(self, tail: Sequence[int]) -> int | None:
        """How many tokens of `tail` the next segment takes, or None while the tail is too short to tell."""
        S = self.size
        if len(tail) < S + self.lookahead:
            return None
        if not self.window:
            return S
        best, best_n = NONE, S
        for n in range(S, S - self.window - 1, -1):
            c = self.boundary(tail, n)
            if c > best:
                best, best_n = c, n
                if c == PARAGRAPH:
                    break
        return best_n

    def cuts(self, tokens: Sequence[int]) -> list[int]:
        """Positions (in tokens) where each segment written from `tokens` ends, as reading them would cut."""
        out, pos = [], 0
        while (n := self.cut(tokens[pos : pos + self.size + self.lookahead])) is not None:
            pos += n
            out.append(pos)
        return out


def for_tokenizer(tokenizer, size: int, window: int | None = None) -> Segmenter:
    """A Segmenter over `tokenizer`'s vocabulary; window None is the default, size // 8 (0 below 16)."""
    if window is None:
        window = size // 8 if size >= 16 else 0
    if not window:
        return Segmenter(size, 0)
    classes = getattr(tokenizer, "_segment_classes", None)
    if classes is None:
        special = set(tokenizer.special_tokens.values())
        n = max([tokenizer.vocab_size, *(i + 1 for i in special)])
        token_bytes = [b"" if i in special else _safe_bytes(tokenizer, i) for i in range(n)]
        classes = token_classes(token_bytes)
        tokenizer._segment_classes = classes  # one pass over the vocabulary per tokenizer
    return Segmenter(size, window, classes)


def _safe_bytes(tokenizer, token_id: int) -> bytes:
    try:
        return tokenizer.token_bytes(token_id)
    except Exception:  # an id without a token (holes in some vocabularies)
        return b""
