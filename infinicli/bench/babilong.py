"""BABILong-style reasoning in a haystack (Kuratov et al. 2024): the facts of a bAbI story, in order,
scattered at random sentence boundaries through book text; the bAbI question is asked at the end.

* Facts and questions: the bAbI TRAIN split files in ``<corpus>/babi`` (the only split the corpus holds),
  only the stories that ``infini train`` never sees (one in five, ``infinicli.babi.held_out``).
  Every question of a story is one candidate sample; its facts are the story's facts before the question.
  The same seeded choice of samples is used at every length, so rows are comparable.
* Haystack: ``<corpus>/books/war_and_peace.txt`` by default (Project Gutenberg prose, like BABILong's PG19),
  each sample from a random place in the book; ``anna_karenina.txt`` is held out for the perplexity
  benchmark and is not used here by default. Any book can be given instead.
* The question ("Question: <bAbI question>", newline, "Answer with one word.") goes through the product
  path (``Engine.final_segment``); greedy decoding, no prefill. A sample is correct iff the expected answer
  word appears (case-insensitive, as a whole word) in the first line of the output.
* Lengths count tokens of the whole input (chat opener, file marker, haystack + facts, question). Length 0
  means no haystack at all (the facts alone): the model's ceiling on the task.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infinicli.babi import QUESTION_FORM, BabiSample, held_out, parse_babi, question_text
from infinicli.bench.common import (
    Interrupted,
    Log,
    Timer,
    answer,
    corpus_dir,
    document_tokens,
    format_table,
    length_label,
    machine_info,
    model_info,
    pct,
    read_text,
    read_tokens,
)
from infinicli.errors import UsageError

DEFAULT_HAYSTACK = "books/war_and_peace.txt"
DOC_NAME = "book.txt"
MAX_NEW_TOKENS = 16


def task_file(task: str, corpus: Path | None = None) -> Path:
    """<corpus>/babi/<task>_*_train.txt (train split only)."""
    if not re.fullmatch(r"qa\d+", task):
        raise UsageError(f"unknown bAbI task {task!r}: use qa1, qa2, ...")
    folder = (corpus or corpus_dir()) / "babi"
    found = sorted(folder.glob(f"{task}_*_train.txt"))
    if not found:
        raise UsageError(f"no bAbI train file for {task} in {folder}")
    return found[0]


def answer_matches(output: str, expected: str) -> bool:
    """The expected word appears (case-insensitive, whole word) in the first non-empty line of the output."""
    first = next((ln for ln in output.strip().splitlines() if ln.strip()), "")
    words = [w for w in re.split(r"[ ,]+", expected.strip()) if w]
    return bool(words) and all(
        re.search(rf"(?<!\w){re.escape(w)}(?!\w)", first, re.IGNORECASE) for w in words
    )


_SENT_END = re.compile(r"(?<=[.!?])\s+")


def book_sentences(text: str) -> list[str]:
    """Sentences of a book, whitespace collapsed (line breaks of the source are not kept)."""
    flat = " ".join(text.split())
    return [s for s in _SENT_END.split(flat) if s]


def build_haystack(
    engine: Any, sentences: list[str], facts: list[str], target: int, extra: int, rng: random.Random
) -> str:
    """Book sentences from a random place (wrapping around) with `facts` inserted in order at random
    sentence boundaries, long enough that document tokens + `extra` (the question) reach ~`target`."""
    tok = engine.tok
    overhead = len(document_tokens(engine, " ".join(facts), DOC_NAME)) + extra
    budget = target - overhead
    start = rng.randrange(len(sentences))
    chosen: list[str] = []
    used = 0
    i = start
    while used < budget:
        s = sentences[i % len(sentences)]
        n = len(tok.encode(" " + s))
        if used + n > budget and used + n - budget > budget - used:
            break  # stopping here is closer to the target than taking one more sentence
        chosen.append(s)
        used += n
        i += 1
        if i - start > 50 * len(sentences):  # an empty-ish book: give up growing
            break
    slots = sorted(rng.randrange(len(chosen) + 1) for _ in facts)
    parts: list[str] = []
    f = 0
    for j in range(len(chosen) + 1):
        while f < len(facts) and slots[f] == j:
            parts.append(facts[f])
            f += 1
        if j < len(chosen):
            parts.append(chosen[j])
    return " ".join(parts)


@dataclass
class Settings:
    tasks: list[str]
    lengths: list[int]
    samples: int
    seed: int = 0
    haystack: str | None = None  # book path; None = <corpus>/books/war_and_peace.txt
    max_new_tokens: int = MAX_NEW_TOKENS


def pick_samples(samples: list[BabiSample], n: int, seed: int, task: str) -> list[BabiSample]:
    rng = random.Random(f"babilong-{seed}-{task}")
    return rng.sample(samples, min(n, len(samples)))


def benchmark_samples(task: str, n: int, seed: int, path: Path | None = None) -> list[BabiSample]:
    """The questions the benchmark asks for (task, samples, seed): held-out stories of the task's file
    (`path`, default task_file(task)), drawn by pick_samples."""
    text = (path or task_file(task)).read_text(encoding="utf-8")
    return pick_samples([s for s in parse_babi(text) if held_out(s.story)], n, seed, task)


def fact_spans(engine: Any, toks: list[int], facts: list[str]) -> list[tuple[int, int] | None]:
    """Where each fact sentence sits in a document's tokens, as (start, end), searched in order; None for a
    fact not found as its own tokens (the probes' way to locate what the memory wrote for each fact)."""
    spans: list[tuple[int, int] | None] = []
    pos = 0
    for f in facts:
        ids = engine.tok.encode(" " + f)
        at = next((p for p in range(pos, len(toks) - len(ids) + 1) if toks[p : p + len(ids)] == ids), None)
        spans.append(None if at is None else (at, at + len(ids)))
        if at is not None:
            pos = at + len(ids)
    return spans


def sample_document(
    engine: Any, sentences: list[str], smp: BabiSample, task: str, length: int, seed: int, index: int
) -> tuple[str, list[int], int]:
    """The benchmark's input for question `index` of (task, length, seed): (the question as asked, the
    document's tokens, the question's token count)."""
    q = question_text(smp.question)
    extra = len(engine.question_tokens(q))
    rng = random.Random(f"babilong-{seed}-{task}-{length}-{index}")
    text = build_haystack(engine, sentences, smp.facts, length, extra, rng)
    return q, document_tokens(engine, text, DOC_NAME), extra


def run_sample(
    engine: Any, sentences: list[str], smp: BabiSample, task: str, length: int, settings: Settings, i: int
) -> dict:
    """Read sample i's document (its facts in `length` tokens of book), ask its question: its result row."""
    t0 = time.perf_counter()
    q, toks, extra = sample_document(engine, sentences, smp, task, length, settings.seed, i)
    state = read_tokens(engine, toks)
    state.complete = True
    out, _ = answer(engine, state, q, max_new_tokens=settings.max_new_tokens, stop_at_newline=True)
    return {
        "task": task,
        "length": length,
        "sample": i,
        "story": smp.story,
        "facts": len(smp.facts),
        "question": smp.question,
        "answer": smp.answer,
        "tokens": len(toks) + extra,
        "segments_in_memory": state.memory.segments,
        "output": out,
        "correct": answer_matches(out, smp.answer),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run(engine: Any, settings: Settings, log: Log | None = None) -> dict:
    """Run the benchmark; returns the JSON-ready result (per-sample results, table, settings, machine)."""
    log = log or (lambda msg: None)
    if settings.haystack:
        book = Path(settings.haystack)
    else:
        book = corpus_dir() / DEFAULT_HAYSTACK
    files = {t: task_file(t) for t in settings.tasks}
    sentences = book_sentences(read_text(book))
    if not sentences:
        raise UsageError(f"{book}: no text to use as haystack")
    timer = Timer()
    results: list[dict] = []
    inputs = {"haystack": str(book), "task_files": {t: str(p) for t, p in files.items()}}
    try:
        for task in settings.tasks:
            chosen = benchmark_samples(task, settings.samples, settings.seed, files[task])
            for length in settings.lengths:
                label = length_label(length)
                with timer(f"{task}/{label}"):
                    for i, smp in enumerate(chosen):
                        r = run_sample(engine, sentences, smp, task, length, settings, i)
                        results.append(r)
                        log(
                            f"babilong {task} {label} #{i + 1}: {'ok   ' if r['correct'] else 'wrong'} "
                            f"{smp.question} {smp.answer!r} → {r['output'].strip()!r}"
                        )
    except KeyboardInterrupt:
        raise Interrupted(summarize(engine, settings, inputs, results, timer)) from None
    return summarize(engine, settings, inputs, results, timer)


def summarize(engine: Any, settings: Settings, inputs: dict, results: list[dict], timer: Timer) -> dict:
    """The JSON-ready result of the samples in `results` (all of them, or those finished before Ctrl-C)."""
    rows, table = [], {}
    for length in settings.lengths:
        label = length_label(length)
        row: list[Any] = [label]
        table[label] = {}
        secs = 0.0
        for task in settings.tasks:
            rs = [r for r in results if r["task"] == task and r["length"] == length]
            n_ok = sum(r["correct"] for r in rs)
            s = timer.seconds.get(f"{task}/{label}", 0.0)
            secs += s
            table[label][task] = {
                "accuracy": 100.0 * n_ok / len(rs) if rs else None,
                "correct": n_ok,
                "samples": len(rs),
                "tokens_min": min((r["tokens"] for r in rs), default=None),
                "tokens_max": max((r["tokens"] for r in rs), default=None),
                "seconds": round(s, 1),
            }
            row.append(pct(n_ok, len(rs)))
        row.append(f"{secs:.1f}")
        rows.append(row)
    header = ["length"] + list(settings.tasks) + ["wall s"]
    return {
        "benchmark": "babilong",
        "settings": {
            **settings.__dict__,
            **inputs,
            "question_form": QUESTION_FORM,
            "decoding": "greedy",
        },
        "model": model_info(engine),
        "machine": machine_info(engine),
        "table": table,
        "table_text": format_table(header, rows),
        "wall_seconds": round(timer.total, 1),
        "results": results,
    }
