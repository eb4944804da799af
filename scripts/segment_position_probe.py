"""Pass-key accuracy by the needle's segment, the same keys at the same offset inside each segment.

`infini bench passkey` draws a fresh key for every depth, so a weak depth column may be weak keys. This probe
holds the keys fixed: each key is hidden in the `infini bench passkey` document at about `--offset` tokens
into segment 0, 1, ..., n-1 (the last one, with the question, is read by local attention), and the question is
asked with greedy decoding as in the benchmark. One row per segment: accuracy, and the exact answers.

    python scripts/segment_position_probe.py --length 4k --offset 100 --keys 10
    python scripts/segment_position_probe.py --length 8k --segments 0,1,6 --keys 10

Diagnostic variants of the reading (one at a time; docs/BENCHMARKS.md, session 12): --write-chunk N (the
delta-rule write in chunks of N tokens), --primer FILE (a text written into memory before every document),
--opener-alone (the chat opener written as its own segment, so the document's first segment starts on text),
--reread-first (segment 0 written twice), --task TEXT (another task line; "" for none).
"""

from __future__ import annotations

import argparse
import json
import random

from infinicli.bench import passkey as P
from infinicli.bench.common import answer, document_tokens, parse_length
from infinicli.session import Options, Session


def start_from(eng, ids: list[int]) -> None:
    """Every document read by `eng` from now on starts on the memory that `ids`, written as one segment,
    leave (not on an empty one)."""
    from infinicli.engine import ReadState

    st = eng.new_state()
    st.tail = list(ids)
    eng.write_segment(st, len(ids))
    eng.new_state = lambda: ReadState(memory=st.memory)


def apply_variants(eng, a: argparse.Namespace) -> None:
    """The diagnostic reading variants (session 12): each changes how the first segment meets the memory."""
    from infinicli.engine import ReadState

    if a.write_chunk >= 0:
        eng.model.icfg.write_chunk = a.write_chunk  # one InfiniConfig object, shared by every layer
    if a.primer:
        start_from(eng, eng.tok.encode(open(a.primer, encoding="utf-8").read()))
    if a.opener_alone:  # the chat opener goes to memory first; the document's first segment starts on text
        start_from(eng, eng.prefix_ids)
        framed = eng.document_tokens

        def unopened(events, state):
            it = framed(events, state)
            next(it)  # the opener, already in memory
            yield from it

        eng.document_tokens = unopened
    if a.reread_first:  # segment 0 is written twice, the second time from states that read the first write
        plain = eng.write_segment

        def twice(state, n):
            if state.memory.segments == 0:
                scratch = ReadState(memory=state.memory, tail=list(state.tail[:n]))
                plain(scratch, n)
                state.memory = scratch.memory
            plain(state, n)

        eng.write_segment = twice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--segment-len", type=int, default=1024)
    ap.add_argument("--length", default="4k")
    ap.add_argument("--offset", type=int, default=100, help="needle's token offset inside its segment")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--segments", default="", help="which segments, e.g. 0,1,6 (default: all)")
    ap.add_argument("--json", default="")
    ap.add_argument("--write-chunk", type=int, default=-1, help="override the adapter's model.write_chunk")
    ap.add_argument("--primer", default="", help="a text file written into memory before every document")
    ap.add_argument("--reread-first", action="store_true", help="write the first segment twice")
    ap.add_argument("--opener-alone", action="store_true", help="write the chat opener as its own segment")
    ap.add_argument("--task", default=None, help="replace the benchmark's task line (diagnosis)")
    a = ap.parse_args()

    if a.task is not None:
        P.TASK = a.task
    eng = Session(Options(adapter=a.adapter, segment_len=a.segment_len, threads=a.threads or None)).engine
    apply_variants(eng, a)
    S = eng.segment_len
    n_f = P.filler_sentences_for(eng, parse_length(a.length))
    cache = P.PrefixCache(eng, n_f)  # reader states of the needle-free document at segment boundaries
    n_seg = (len(cache.filler_tokens) + P.prompt_tokens(eng)) // S + 1
    rng = random.Random(f"segment-probe-{a.seed}")
    keys = [str(rng.randint(10000, 99999)) for _ in range(a.keys)]
    rows = []
    for seg in [int(x) for x in a.segments.split(",")] if a.segments else range(n_seg):
        target = seg * S + a.offset
        lo, hi = 0, n_f  # the first k whose prefix (task line + k filler sentences) reaches the target
        while lo < hi:
            mid = (lo + hi) // 2
            if len(document_tokens(eng, P.TASK + "\n" + P.filler(mid), P.DOC_NAME)) < target:
                lo = mid + 1
            else:
                hi = mid
        k = lo
        depth = 100 * k / n_f  # needle_sentence() rounds n_f * depth / 100 back to k
        docs = [document_tokens(eng, P.haystack_text(n_f, depth, key), P.DOC_NAME) for key in keys]
        # the filler before the needle is read once for all keys, not once per key
        cache.fill([cache.boundary(t) for t in docs])
        ok, outs, at = 0, [], None
        for key, toks in zip(keys, docs, strict=True):
            at = P.common_prefix(toks, cache.filler_tokens)
            state, _ = P.read_sample(eng, cache, toks)
            out, _ = answer(eng, state, P.QUESTION, prefill=P.PREFILL, max_new_tokens=P.MAX_NEW_TOKENS)
            ok += P.is_correct(out, key)
            outs.append(out.strip())
        rows.append({"segment": seg, "needle_token": at, "correct": ok, "of": len(keys), "outputs": outs})
        print(f"segment {seg} (needle at token {at}): {ok}/{len(keys)}  {' '.join(outs)}", flush=True)
    print("keys: " + " ".join(keys))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"settings": vars(a), "keys": keys, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
