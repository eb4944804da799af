"""Two adapters on the same questions: a paired comparison of `infini bench babilong | passkey --json` files.

Each result row is matched to the other side's row for the same question (the file's seed, then task,
length, depth and sample index: the benchmarks draw the same stories and keys for the same seed), and the
script counts the questions only one side gets right. The two-sided exact sign test on those discordant pairs
says how likely a split at least that uneven would be if both adapters were equally good, which a difference
of totals alone does not (most questions are right or wrong for both):

    python scripts/bench_paired.py runs/s28/more_shipped runs/s29/s15   # all bl*.json, pk*.json in each
    python scripts/bench_paired.py A/bl4k_s0.json B/bl4k_s0.json        # one file each

A folder stands for all its `bl*.json` and `pk*.json` files. Rows with no partner are left out and counted.
"""

from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path

Key = tuple[object, ...]


def load(paths: list[Path]) -> dict[str, dict[Key, bool]]:
    """{group: {question key: correct}} over bench JSON files or folders of them. A group is a babilong
    task or the pass key at one length ("qa1 4k", "passkey 32k"); a key is (seed, depth, sample)."""
    files: list[Path] = []
    for p in paths:
        files += sorted([*p.glob("bl*.json"), *p.glob("pk*.json")]) if p.is_dir() else [p]
    out: dict[str, dict[Key, bool]] = {}
    for f in files:
        doc = json.loads(f.read_text())
        seed = doc.get("settings", {}).get("seed")
        for r in doc.get("results", []):
            group = f"{r.get('task', doc.get('benchmark', 'passkey'))} {round(r['length'] / 1024)}k"
            key = (seed, r.get("depth"), r.get("sample"))
            out.setdefault(group, {})[key] = bool(r["correct"])
    return out


def sign_test(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test p-value for `only_a` against `only_b` discordant pairs (1.0 when none)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def compare(a: dict[Key, bool], b: dict[Key, bool]) -> dict[str, float]:
    """Counts over the questions both sides answered: right for A, for B, only A, only B; unmatched; p."""
    keys = a.keys() & b.keys()
    only_a = sum(a[k] and not b[k] for k in keys)
    only_b = sum(b[k] and not a[k] for k in keys)
    return {
        "questions": len(keys),
        "a": sum(a[k] for k in keys),
        "b": sum(b[k] for k in keys),
        "only_a": only_a,
        "only_b": only_b,
        "unmatched": len(a.keys() ^ b.keys()),
        "p": sign_test(only_a, only_b),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="A: a bench JSON file or a folder of them")
    ap.add_argument("b", type=Path, help="B: the same, for the other adapter")
    args = ap.parse_args(argv)
    a, b = load([args.a]), load([args.b])
    print("| group | questions | A right | B right | only A | only B | sign test p |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for group in sorted(a.keys() & b.keys(), key=lambda g: (g.split()[0], int(g.split()[1][:-1]))):
        c = compare(a[group], b[group])
        extra = f" ({c['unmatched']} unmatched)" if c["unmatched"] else ""
        cells = [group, *(str(c[k]) for k in ("questions", "a", "b", "only_a", "only_b")), f"{c['p']:.3f}"]
        print("| " + " | ".join(cells) + " |" + extra)


if __name__ == "__main__":
    main()
