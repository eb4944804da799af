"""Perplexity of a book's first N tokens, three ways, same model, adapter and scored tokens:

* ``memory``         -- segments read in order with the compressive memory carried: each segment's logits
                        are computed while reading it (``forward_segment(..., write=True)``), as the product
                        reads.
* ``no_memory``      -- every segment on its own, empty memory (the base model on S-token windows).
* ``sliding_window`` -- plain attention over two segments: each segment predicted with the previous segment
                        as extra local context, empty memory (the first segment has no previous one).

Scored tokens are identical in all three: tokens 1..S-1 of every segment (next-token loss inside the segment;
the first token of a segment is never scored), so the segments are cut every S tokens exactly, not at text
boundaries as the engine cuts them (segmenting.py). The text is the book's plain tokens (no chat framing).
Default book: ``<corpus>/books/anna_karenina.txt`` (cp1252; held out from training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from infinicli.bench.common import Log, corpus_dir, format_table, machine_info, model_info
from infinicli.errors import UsageError

DEFAULT_BOOK = "books/anna_karenina.txt"
METHODS = ("memory", "no_memory", "sliding_window")


def book_tokens(engine: Any, path: str | Path, n_tokens: int) -> list[int]:
    """The first `n_tokens` plain tokens of a book (decoded by the product readers), read lazily."""
    from infinicli.readers import TextPiece, read_sources

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file")

    def pieces():
        for ev in read_sources([str(p)]):
            if isinstance(ev, TextPiece):
                yield ev.text

    out: list[int] = []
    for chunk in engine.tok.encode_stream(pieces()):
        out.extend(chunk)
        if len(out) >= n_tokens:  # yielded chunks are final: they concatenate to the whole tokenization
            break
    return out[:n_tokens]


def _nll(model: Any, h: torch.Tensor, targets: Sequence[int]) -> float:
    """Summed next-token loss: hidden states h [T, C] predict `targets` [T]."""
    logits = model.head(h).float()
    tgt = torch.tensor(list(targets), dtype=torch.long, device=logits.device)
    return float(F.cross_entropy(logits, tgt, reduction="sum"))


@torch.inference_mode()
def perplexities(engine: Any, tokens: Sequence[int], log: Log | None = None) -> dict:
    """NLL and perplexity of `tokens` with memory, without memory and with a two-segment window."""
    log = log or (lambda msg: None)
    model = engine.model
    device = engine.lm.device
    S = engine.segment_len
    segs = [list(tokens[i : i + S]) for i in range(0, len(tokens), S)]
    segs = [s for s in segs if len(s) >= 2]
    if not segs:
        raise UsageError("too few tokens to score (need at least 2)")
    empty = model.empty_memory(1)
    memory = model.empty_memory(1)
    nll = dict.fromkeys(METHODS, 0.0)
    secs = dict.fromkeys(METHODS, 0.0)
    per_segment: list[dict] = []
    prev: list[int] = []
    for j, seg in enumerate(segs):
        row: dict[str, Any] = {"segment": j, "scored": len(seg) - 1}
        ids = torch.tensor([seg], dtype=torch.long, device=device)
        t = time.perf_counter()
        h, memory = model.forward_segment(ids, memory, write=True, logits="all", hidden=True)
        row["memory"] = _nll(model, h[0, :-1], seg[1:])
        secs["memory"] += time.perf_counter() - t

        t = time.perf_counter()
        h, _ = model.forward_segment(ids, empty, write=False, logits="all", hidden=True)
        row["no_memory"] = _nll(model, h[0, :-1], seg[1:])
        secs["no_memory"] += time.perf_counter() - t

        t = time.perf_counter()
        ids2 = torch.tensor([prev + seg], dtype=torch.long, device=device)
        h, _ = model.forward_segment(ids2, empty, write=False, logits="all", hidden=True)
        row["sliding_window"] = _nll(model, h[0, len(prev) : -1], seg[1:])
        secs["sliding_window"] += time.perf_counter() - t

        for m in METHODS:
            nll[m] += row[m]
        per_segment.append(row)
        prev = seg
        log(
            f"ppl segment {j + 1}/{len(segs)}: "
            + ", ".join(f"{m} {math.exp(row[m] / row['scored']):.2f}" for m in METHODS)
        )
    scored = sum(len(s) - 1 for s in segs)
    return {
        "tokens": sum(len(s) for s in segs),
        "scored": scored,
        "segments": len(segs),
        "methods": {
            m: {"nll": nll[m] / scored, "ppl": math.exp(nll[m] / scored), "seconds": round(secs[m], 2)}
            for m in METHODS
        },
        "per_segment": per_segment,
    }


@dataclass
class Settings:
    tokens: int
    book: str | None = None  # None = <corpus>/books/anna_karenina.txt


def run(engine: Any, settings: Settings, log: Log | None = None) -> dict:
    """Run the benchmark; returns the JSON-ready result (numbers, table, settings, machine)."""
    t0 = time.perf_counter()
    book = Path(settings.book) if settings.book else corpus_dir() / DEFAULT_BOOK
    toks = book_tokens(engine, book, settings.tokens)
    if len(toks) < settings.tokens:
        (log or (lambda msg: None))(f"{book} has only {len(toks):,} tokens; scoring all of them")
    res = perplexities(engine, toks, log)
    labels = {
        "memory": "with memory (Infini-attention)",
        "no_memory": "without memory (segment alone)",
        "sliding_window": "sliding window (2 segments, no memory)",
    }
    rows = [
        [
            labels[m],
            f"{res['methods'][m]['ppl']:.3f}",
            f"{res['methods'][m]['nll']:.4f}",
            f"{res['methods'][m]['seconds']:.1f}",
        ]
        for m in METHODS
    ]
    return {
        "benchmark": "ppl",
        "settings": {**settings.__dict__, "book": str(book), "scoring": "tokens 1..S-1 of every segment"},
        "model": model_info(engine),
        "machine": machine_info(engine),
        **res,
        "table_text": format_table(["method", "ppl", "nll/token", "s"], rows),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
