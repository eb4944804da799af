"""Where a segment ends: at `size` tokens, or at the best text boundary among the last `window` tokens.

A fixed cut every `size` tokens splits whatever sits across it: a sentence, a number, a pass key's second
mention. The part after the cut is written to memory by a segment whose local attention never saw the part
before it (measured in docs/BENCHMARKS.md, session 21: a pass key cut this way was found 0 of 6 times at 32K
where whole needles around it were found 10 of 14). So the engine ends a segment early, at most `window`
tokens before `size`, at the strongest boundary it finds there, the latest one of that strength:

    paragraph end (a blank line)  >  a line end that ends a sentence  >  sentence end  >  line end
    >  word end  >  (none: the fixed cut at `size`)

A sentence end ranks above a bare line end because books are often hard-wrapped (a line end every dozen
words, mostly inside sentences), while a log's records are lines that seldom hold ". " inside them.

The choice looks only at the first `size + 1` tokens of the unread tail (the extra token tells whether the
next segment would start a new word), so the cuts are a function of the token stream alone: reading in
chunks of any size, resuming, or reusing a cached prefix gives the same segments. `window = 0` is the fixed
cut (what training uses: its batches need segments of equal length).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

NONE, WORD, LINE, SENTENCE, SENTENCE_LINE, PARAGRAPH = range(6)

_SENTENCE_END = (b".", b"!", b"?")
_CLOSERS = b"\"')]\xe2\x80\x9d\xe2\x80\x99"  # a sentence may end inside quotes or brackets: ." .” .) .'
_OPENERS = b"\"'([*-#>"  # ...or start with a quote, a bracket, a list or heading mark


@dataclass(frozen=True)
class TokenClasses:
    """What a cut next to each token id needs to know about it (one byte per id each)."""

    newlines: bytearray  # newlines in its trailing whitespace (capped at 2)
    sentence: bytearray  # its text before trailing whitespace ends a sentence: . ! ? then closing quotes
    trailing_space: bytearray  # it ends with whitespace
    starts_space: bytearray  # it starts with whitespace
    blank: bytearray  # it is only whitespace
    opens: bytearray  # its first non-space character may open a sentence: a capital, a digit, a quote...


def token_classes(token_bytes: Sequence[bytes]) -> TokenClasses:
    """The TokenClasses of a vocabulary given as each id's bytes (b"" for special or missing ids)."""
    n = len(token_bytes)
    c = TokenClasses(*(bytearray(n) for _ in range(6)))
    for i, b in enumerate(token_bytes):
        if not b:
            continue
        body = b.rstrip()
        c.newlines[i] = min(2, b[len(body) :].count(b"\n"))
        c.sentence[i] = body.rstrip(_CLOSERS).endswith(_SENTENCE_END)
        c.trailing_space[i] = body != b
        c.starts_space[i] = b[:1].isspace()
        c.blank[i] = not body
        first = b.lstrip()[:1]
        c.opens[i] = bool(first) and (
            first.isupper() or first.isdigit() or first in _OPENERS or first[0] >= 0x80
        )
    return c


class Segmenter:
    """Decides the length of each segment written to memory (see the module docstring)."""

    def __init__(self, size: int, window: int = 0, classes: TokenClasses | None = None):
        if size < 1:
            raise ValueError("segment size must be positive")
        if not 0 <= window < size:
            raise ValueError(f"the cut window must be in [0, {size - 1}]")
        if window and classes is None:
            raise ValueError("a cut window needs the tokenizer's token classes")
        self.size = int(size)
        self.window = int(window)
        self.classes = classes

    @property
    def lookahead(self) -> int:
        """Tokens beyond `size` that a decision looks at (the next segment's first token)."""
        return 1 if self.window else 0

    def boundary(self, tokens: Sequence[int], n: int) -> int:
        """The strength of a cut after tokens[:n] (tokens[n] must exist)."""
        c = self.classes
        a, b = tokens[n - 1], tokens[n]
        before = tokens[n - 2] if n >= 2 else None  # the token before a, if any
        if c.newlines[a]:
            if c.newlines[a] == 2 or (c.blank[a] and before is not None and c.newlines[before]):
                return PARAGRAPH  # a blank line, in one token or two
            if c.sentence[a] or (c.blank[a] and before is not None and c.sentence[before]):
                return SENTENCE_LINE
            return LINE
        if c.trailing_space[a] or c.starts_space[b]:
            # ". " counts as a sentence end only before what may open one ("part-00296. blk_..." in a log
            # is inside a record; "it. The" is not)
            return SENTENCE if c.sentence[a] and (c.opens[b] or c.blank[b]) else WORD
        return NONE

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
    classes = _CLASSES.get(tokenizer)
    if classes is None:  # one pass over the vocabulary per tokenizer
        special = set(tokenizer.special_tokens.values())
        n = max([tokenizer.vocab_size, *(i + 1 for i in special)])
        classes = token_classes([b"" if i in special else _safe_bytes(tokenizer, i) for i in range(n)])
        _CLASSES[tokenizer] = classes
    return Segmenter(size, window, classes)


_CLASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its TokenClasses


def _safe_bytes(tokenizer, token_id: int) -> bytes:
    try:
        return tokenizer.token_bytes(token_id)
    except Exception:  # an id without a token (holes in some vocabularies)
        return b""
