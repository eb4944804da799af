"""Ask the ten corpus questions of docs/corpus_questions.json through the product path and write a table.

Each document is read by the engine (memory cached like `infini ask`), the question asked greedily; a reply
is marked right when it contains an accepted string as whole words ("12 columns" does not match "2", a quoted
"ZooKeeperServer" does not match "zookeeper"). Usage (from the repo, corpus beside it):
    python scripts/corpus_questions.py --out docs/CORPUS_QUESTIONS.md [--adapter default|none|FILE]
        [--segment-len N]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from infinicli.session import Options, Session

REPO = Path(__file__).resolve().parents[1]


def right(reply: str, accept: list[str]) -> bool:
    """True when the reply holds one of the accepted strings as whole words (case-insensitive)."""
    return any(re.search(rf"(?<!\w){re.escape(s)}(?!\w)", reply, re.IGNORECASE) for s in accept)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=None, help="default: the adapter's")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    a = ap.parse_args()
    spec = json.loads((REPO / "docs" / "corpus_questions.json").read_text())
    session = Session(Options(adapter=a.adapter, segment_len=a.segment_len, max_new_tokens=48, seed=0))
    rows = []
    for item in spec["questions"]:
        t0 = time.perf_counter()
        result = session.memory_for([str(a.corpus / item["doc"])])
        reply = "".join(session.answer(result.state, item["q"])).strip()
        ok = right(reply, item["accept"])
        tokens = result.state.tokens_read
        rows.append((item["doc"], tokens, item["q"], reply.replace("\n", " ").replace("|", "\\|"), ok))
        print(
            f"{'right' if ok else 'wrong'} {item['doc']}: {item['q']} -> {reply!r} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    lines = [
        f"Adapter: `{a.adapter}`; greedy, at most 48 tokens; {sum(r[4] for r in rows)} / {len(rows)} right.",
        "",
        "| document | tokens | question | answer | right |",
        "|---|---:|---|---|---|",
    ]
    lines += [f"| {d} | {t} | {q} | {r} | {'yes' if ok else 'no'} |" for d, t, q, r, ok in rows]
    a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
