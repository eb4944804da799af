"""Ask the twelve planted-fact questions of sample_docs/FACTS.md through the product path; print a table.

Each source is read by the engine (memory cached like `infini ask`) and the question asked greedily; a reply
is right when it contains every `backticked` part of the expected answer (case-insensitive). The facts sit
at known depths (3 % to 99 % of the chronicle, pages and log lines), so the table shows the memory's reads
next to answers from the local text of the final segment. Usage:
    python scripts/sample_questions.py [--adapter default|none|FILE] [--segment-len N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from infinicli.session import Options, Session

REPO = Path(__file__).resolve().parents[1]


def facts() -> list[dict]:
    """Rows of the FACTS.md table: source, question, expected answer, its backticked parts, where."""
    rows = []
    for line in (REPO / "sample_docs" / "FACTS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            _, source, question, expected, where = cells
            parts = re.findall(r"`([^`]+)`", expected)
            rows.append(
                {"source": source, "q": question, "expected": expected, "parts": parts, "where": where}
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=None, help="default: the adapter's")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    os.chdir(REPO)
    session = Session(Options(adapter=a.adapter, segment_len=a.segment_len, max_new_tokens=48, seed=0))
    results = []
    for item in facts():
        t0 = time.perf_counter()
        # the path as README types it: the file's name goes into the stream (engine.file_marker), so another
        # spelling of the path moves where the segments end (and, measured, can change the answer)
        state = session.memory_for([f"sample_docs/{item['source']}"]).state
        reply = "".join(session.answer(state, item["q"])).strip()
        ok = all(p.lower() in reply.lower() for p in item["parts"])
        results.append({**item, "reply": reply, "right": ok, "tokens": state.tokens_read})
        verdict = "right" if ok else "wrong"
        print(f"{verdict} {item['source']}: {item['q']} -> {reply!r} ({time.perf_counter() - t0:.0f} s)")
    print(f"\nadapter {a.adapter}: {sum(r['right'] for r in results)} / {len(results)} right\n")
    print("| # | source | where | question | answer | right |\n|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        reply = r["reply"].replace("\n", " ").replace("|", "\\|")
        print(
            f"| {i} | {r['source']} | {r['where']} | {r['q']} | {reply} | {'yes' if r['right'] else 'no'} |"
        )
    if a.json:
        a.json.write_text(json.dumps({"adapter": a.adapter, "results": results}, indent=1))


if __name__ == "__main__":
    main()
