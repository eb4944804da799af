"""Pass-key retrieval (Infini-attention paper, section 4.1; template of Landmark attention, Mohtashami &
Jaggi 2023): a 5-digit key hidden at a given depth of repetitive filler, asked for at the end.

The document is the Landmark template (task line, filler, needle line, filler), read as one text file
through the product path; the question "What is the pass key?" goes through ``Engine.final_segment`` and
the assistant's answer is prefilled with "The pass key is", then ~8 tokens are decoded greedily. A sample is
correct iff the first 5-digit number of the output is the key.

Speed: the memory after a prefix of pure filler is the same for every sample, so the filler-only document is
read once per length and the reader state is kept at the segment boundary just before each depth's needle
(a state is ~1.4 MB for SmolLM2-135M). A sample starts from that snapshot and reads only the needle and what
follows; the result is bit-identical to reading the whole sample (tests/test_bench.py checks it).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infinicli.bench.common import (
    Interrupted,
    Log,
    Timer,
    answer,
    copy_state,
    document_tokens,
    format_table,
    length_label,
    machine_info,
    model_info,
    pct,
    read_tokens,
)

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key?"
PREFILL = "The pass key is"
DOC_NAME = "passkey.txt"
MAX_NEW_TOKENS = 8

_FIVE_DIGITS = re.compile(r"(?<!\d)\d{5}(?!\d)")


def extract_key(text: str) -> str | None:
    """The first 5-digit number of `text` (not part of a longer number), or None."""
    m = _FIVE_DIGITS.search(text)
    return m.group(0) if m else None


def is_correct(output: str, key: str | int) -> bool:
    return extract_key(output) == str(key)


def needle_in_memory(result: dict, segment_len: int) -> bool:
    """True when a result row's needle lay in a segment written to memory before the question's segment
    (False: the final segment, which local attention reads). Rows from before text-boundary cuts have no
    tokens_in_memory: their segments were all segment_len long."""
    written = result.get("tokens_in_memory", result["segments_in_memory"] * segment_len)
    return result["needle_token"] < written


FILLER_SENTENCES = [s if s.endswith(".") else s + "." for s in FILLER.split(". ")]


def filler(n: int) -> str:
    """The first `n` sentences of the endlessly repeated filler (sentence granularity keeps the length close
    to the target: a sentence is ~5 tokens)."""
    k = len(FILLER_SENTENCES)
    return " ".join(FILLER_SENTENCES[i % k] for i in range(n))


def needle_sentence(n_filler: int, depth: int) -> int:
    """How many filler sentences precede the needle at `depth` percent of the filler."""
    return round(n_filler * depth / 100)


def haystack_text(n_filler: int, depth: int | None, key: str | int | None) -> str:
    """The document: task line, filler, the needle line at `depth` % of the `n_filler` filler sentences (no
    needle when depth is None), the rest of the filler; lines joined by newlines as in the Landmark
    template."""
    if depth is None:
        parts = [TASK, filler(n_filler)]
    else:
        k = needle_sentence(n_filler, depth)
        rest = filler(n_filler)[len(filler(k)) :].lstrip(" ")
        parts = [TASK, filler(k), NEEDLE.format(key=key), rest]
    return "\n".join(p for p in parts if p)


def make_key(seed: int, length: int, depth: int, sample: int) -> str:
    """A random 5-digit key, reproducible from (seed, length, depth, sample)."""
    return str(random.Random(f"passkey-{seed}-{length}-{depth}-{sample}").randint(10000, 99999))


def prompt_tokens(engine: Any) -> int:
    """Tokens after the document: question (with the chat turn switch) and the prefilled answer start."""
    return len(engine.question_tokens(QUESTION)) + len(engine.tok.encode(PREFILL))


def total_tokens(engine: Any, n_filler: int) -> int:
    """Tokens of the whole input (document + question + prefill) with `n_filler` filler sentences."""
    return len(document_tokens(engine, haystack_text(n_filler, 50, "12345"), DOC_NAME)) + prompt_tokens(
        engine
    )


def filler_sentences_for(engine: Any, target: int) -> int:
    """Filler sentences that bring the whole input closest to `target` tokens."""
    a, b = 10, 510
    ta, tb = total_tokens(engine, a), total_tokens(engine, b)
    per = (tb - ta) / (b - a)
    n = max(0, round(a + (target - ta) / per))
    for _ in range(4):  # the linear estimate is off only by boundary effects; settle on the nearest count
        step = round((target - total_tokens(engine, n)) / per)
        if step == 0:
            break
        n = max(0, n + step)
    return n


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Reader states of the filler-only document at chosen segment ends (position → ReadState)."""

    def __init__(self, engine: Any, n_filler: int):
        self.engine = engine
        self.filler_tokens = document_tokens(engine, haystack_text(n_filler, None, None), DOC_NAME)
        self.cuts = [0, *engine.segmenter.cuts(self.filler_tokens)]  # where reading it ends each segment
        self.states: dict[int, Any] = {0: engine.new_state()}

    def boundary(self, tokens: Sequence[int]) -> int:
        """The last segment end that reading `tokens` shares with reading the filler-only document: every
        cut before it was decided on tokens the two have in common."""
        same = common_prefix(tokens, self.filler_tokens)
        seen = self.engine.segment_len + self.engine.segmenter.lookahead  # tokens a cut decision looks at
        best = 0
        for prev, cut in zip(self.cuts, self.cuts[1:], strict=False):
            if prev + seen > same:
                break
            best = cut
        return best

    def fill(self, boundaries: Sequence[int]) -> None:
        """Read the filler-only document once, up to the last boundary, keeping a state at each one."""
        want = sorted(set(boundaries) - set(self.states))
        if not want:
            return
        start = max(p for p in self.states if p <= want[0])
        state = copy_state(self.states[start])
        ends = [c for c in self.cuts if start < c <= want[-1]]
        for end in ends:  # the segments reading would write, in order
            state.tail = list(self.filler_tokens[state.tokens_read : end])
            self.engine.write_segment(state, len(state.tail))
            if end in want:
                self.states[end] = copy_state(state)

    def state_for(self, tokens: Sequence[int]) -> tuple[Any, int]:
        """(a fresh copy of the deepest cached state that `tokens` begin with, its position)."""
        b = self.boundary(tokens)
        pos = max(p for p in self.states if p <= b)
        return copy_state(self.states[pos]), pos


def read_sample(engine: Any, cache: PrefixCache, tokens: Sequence[int]) -> tuple[Any, int]:
    """The ReadState of a whole sample document: cached filler prefix + the rest read. → (state, reused)."""
    state, pos = cache.state_for(tokens)
    read_tokens(engine, tokens[pos:], state)
    state.complete = True
    return state, pos


def needle_segment(engine: Any, tokens: Sequence[int], at: int) -> int:
    """Index of the segment that reading `tokens` puts token `at` in (the last one: the question's)."""
    return sum(1 for c in engine.segmenter.cuts(tokens) if c <= at)


@dataclass
class Settings:
    lengths: list[int]
    depths: list[int]
    samples: int
    seed: int = 0
    max_new_tokens: int = MAX_NEW_TOKENS


def run_sample(
    engine: Any,
    cache: PrefixCache,
    settings: Settings,
    n_filler: int,
    where: tuple[int, int, int],
    extra: int,
) -> dict:
    """Sample i at where = (length, depth, i): its document read (the filler prefix from `cache`), the
    question asked (`extra` tokens of prompt); its result row."""
    length, depth, i = where
    key = make_key(settings.seed, length, depth, i)
    toks = document_tokens(engine, haystack_text(n_filler, depth, key), DOC_NAME)
    t0 = time.perf_counter()
    state, reused = read_sample(engine, cache, toks)
    out, _ = answer(engine, state, QUESTION, prefill=PREFILL, max_new_tokens=settings.max_new_tokens)
    needle_at = common_prefix(toks, cache.filler_tokens)
    return {
        "length": length,
        "depth": depth,
        "sample": i,
        "key": key,
        "tokens": len(toks) + extra,
        "needle_token": needle_at,
        "segments_in_memory": state.memory.segments,
        "tokens_in_memory": state.tokens_written,
        "needle_segment": needle_segment(engine, toks, needle_at),
        "reused_tokens": reused,
        "output": out,
        "found": extract_key(out),
        "correct": is_correct(out, key),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run(engine: Any, settings: Settings, log: Log | None = None) -> dict:
    """Run the benchmark; returns the JSON-ready result (per-sample results, table, settings, machine)."""
    log = log or (lambda msg: None)
    timer = Timer()
    results: list[dict] = []
    extra = prompt_tokens(engine)
    try:
        for length in settings.lengths:
            label = length_label(length)
            with timer(label):
                n_filler = filler_sentences_for(engine, length)
                cache = PrefixCache(engine, n_filler)
                probes = [
                    haystack_text(n_filler, d, make_key(settings.seed, length, d, 0)) for d in settings.depths
                ]
                cache.fill([cache.boundary(document_tokens(engine, t, DOC_NAME)) for t in probes])
                n_samples = len(settings.depths) * settings.samples
                log(f"passkey {label}: {n_filler} filler sentences, {n_samples} samples")
                for depth, i in ((d, i) for d in settings.depths for i in range(settings.samples)):
                    r = run_sample(engine, cache, settings, n_filler, (length, depth, i), extra)
                    results.append(r)
                    verdict = "ok   " if r["correct"] else "wrong"
                    where = f"passkey {label} depth {depth}% #{i + 1}"
                    log(f"{where}: {verdict} key {r['key']} → {r['output']!r}")
    except KeyboardInterrupt:
        raise Interrupted(summarize(engine, settings, results, timer)) from None
    return summarize(engine, settings, results, timer)


def summarize(engine: Any, settings: Settings, results: list[dict], timer: Timer) -> dict:
    rows, table = [], {}
    for length in settings.lengths:
        label = length_label(length)
        cells = {}
        for depth in settings.depths:
            rs = [r for r in results if r["length"] == length and r["depth"] == depth]
            cells[str(depth)] = 100.0 * sum(r["correct"] for r in rs) / len(rs) if rs else None
        rs = [r for r in results if r["length"] == length]
        n_ok = sum(r["correct"] for r in rs)
        toks = [r["tokens"] for r in rs]
        table[label] = {
            "depths": cells,
            "accuracy": 100.0 * n_ok / len(rs) if rs else None,
            "tokens_min": min(toks) if toks else None,
            "tokens_max": max(toks) if toks else None,
            "seconds": round(timer.seconds.get(label, 0.0), 1),
        }
        rows.append(
            [label]
            + [
                pct(sum(r["correct"] for r in rs if r["depth"] == d), sum(r["depth"] == d for r in rs))
                for d in settings.depths
            ]
            + [pct(n_ok, len(rs)), f"{timer.seconds.get(label, 0.0):.1f}"]
        )
    header = ["length"] + [f"{d}%" for d in settings.depths] + ["all", "wall s"]
    return {
        "benchmark": "passkey",
        "settings": {
            **settings.__dict__,
            "task": TASK,
            "filler": FILLER,
            "needle": NEEDLE,
            "question": QUESTION,
            "prefill": PREFILL,
            "decoding": "greedy",
        },
        "model": model_info(engine),
        "machine": machine_info(engine),
        "table": table,
        "table_text": format_table(header, rows),
        "wall_seconds": round(timer.total, 1),
        "results": results,
    }
