"""Which digits of a pass key the memory gets wrong: a post-mortem of `infini bench passkey --json` files.

Reads one or more result files and, for the samples whose needle was read from memory (not in the final
segment, which local attention sees), counts each answer's kind of miss and how often the answer's i-th digit
equals the key's i-th digit:

    python scripts/passkey_digits.py runs/s17/st8/pk*.json runs/s16/pk1m.json

With --by-segment it also prints the share right by the needle's segment (counted from the document's
start, and from the question: 1 = the last segment written before it).

Kinds: right; one digit replaced (same length, one position differs); digits reordered (same digits, another
order); a digit dropped or added (the answer is the key with one digit removed, or one more digit); other.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from infinicli.bench.passkey import needle_in_memory


def miss_kind(key: str, found: str) -> str:
    """The kind of answer `found` is for `key` (both digit strings; `found` may be empty)."""
    if found == key:
        return "right"
    if len(found) == len(key):
        if sum(a != b for a, b in zip(found, key, strict=True)) == 1:
            return "one digit replaced"
        if sorted(found) == sorted(key):
            return "digits reordered"
    if one_digit_more(key, found):
        return "a digit dropped"
    if one_digit_more(found, key):
        return "a digit added"
    return "other"


def one_digit_more(longer: str, shorter: str) -> bool:
    """True when removing one digit of `longer` gives `shorter`."""
    return len(longer) == len(shorter) + 1 and any(
        longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer))
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="`infini bench passkey --json` result files")
    ap.add_argument("--by-segment", action="store_true", help="also the share right by the needle's segment")
    args = ap.parse_args(argv)
    kinds: Counter[str] = Counter()
    digit_right, digit_total = Counter(), Counter()
    n_local = 0
    by_segment: Counter[tuple[int, int, int]] = Counter()  # (length, segment, from end) -> samples
    right_by_segment: Counter[tuple[int, int, int]] = Counter()
    for path in args.files:
        data = json.loads(path.read_text())
        seg = int(data["model"]["segment_len"])
        for r in data["results"]:
            if not needle_in_memory(r, seg):
                n_local += 1
                continue
            key = r["key"]
            digits = re.search(r"\d+", r["output"])  # the benchmark's `found` wants exactly 5 digits
            found = digits.group() if digits else ""
            kinds[miss_kind(key, found)] += 1
            k = r.get("needle_segment", r["needle_token"] // seg)  # fixed cuts before it was recorded
            cell = (r.get("length", 0), k, r["segments_in_memory"] - k)
            by_segment[cell] += 1
            right_by_segment[cell] += int(found == key)
            for i, k in enumerate(key):
                digit_total[i] += 1
                digit_right[i] += int(i < len(found) and found[i] == k)
    n = sum(kinds.values())
    print(f"{n} samples with the needle in memory ({n_local} in the final segment left out)")
    for kind, c in kinds.most_common():
        print(f"  {kind:<20} {c:4d}  {100 * c / max(n, 1):5.1f} %")
    cells = "  ".join(f"{i + 1}: {100 * digit_right[i] / digit_total[i]:.0f} %" for i in sorted(digit_total))
    print(f"digit right at its position: {cells}")
    if args.by_segment:
        print("length  segment  from the question  right")
        for cell in sorted(by_segment):
            length, k, back = cell
            print(f"{length:>6}  {k:>7}  {back:>17}  {right_by_segment[cell]:>2} / {by_segment[cell]}")


if __name__ == "__main__":
    main()
