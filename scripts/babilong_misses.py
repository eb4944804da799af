"""What the QA1 misses are: a post-mortem of `infini bench babilong --json` files.

For every qa1 sample in the given result files, classifies the answer as right, an earlier room of the person
asked about (the memory kept an old move), another person's room (the memory mixed up who), or a room the
story never named:

    python scripts/babilong_misses.py bl4k_s0.json bl4k_s1.json

The samples are re-drawn from the corpus with the file's own seed and sample count, exactly as the benchmark
drew them, so the corpus must be present (INFINI_CORPUS or ../shared/corpus).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from infinicli.bench.babilong import benchmark_samples

KINDS = ("right", "earlier room, same person", "another person's room", "a room not in the story")


def _room(fact: str) -> str:
    return fact.split()[-1].rstrip(".").lower()


def classify(output: str, question: str, facts: list[str], correct: bool) -> str:
    """The kind of one qa1 answer (one of KINDS)."""
    if correct:
        return KINDS[0]
    person = question.split()[-1].rstrip("?")
    out = output.lower()
    own = [_room(f) for f in facts if f.startswith(person + " ")]
    others = [_room(f) for f in facts if not f.startswith(person + " ")]
    if any(re.search(rf"\b{w}\b", out) for w in own[:-1]):
        return KINDS[1]
    if any(re.search(rf"\b{w}\b", out) for w in others):
        return KINDS[2]
    return KINDS[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    total: Counter[str] = Counter()
    for path in args.files:
        res = json.loads(path.read_text())
        chosen = benchmark_samples("qa1", res["settings"]["samples"], res["settings"]["seed"])
        kinds = Counter(
            classify(r["output"], chosen[r["sample"]].question, chosen[r["sample"]].facts, r["correct"])
            for r in res["results"]
            if r["task"] == "qa1"
        )
        total += kinds
        print(f"{path}: " + ", ".join(f"{k} {kinds[k]}" for k in KINDS))
    if len(args.files) > 1:
        print("all: " + ", ".join(f"{k} {total[k]}" for k in KINDS))


if __name__ == "__main__":
    main()
