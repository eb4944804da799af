"""`infini ask`, `infini summarize`, `infini read`: read documents into memory, answer from it."""

from __future__ import annotations

import json
import sys
import time

import typer

from infinicli.cli import app
from infinicli.cli.display import Display, human_bytes
from infinicli.errors import UsageError

MODEL = typer.Option(
    None, "--model", "-m", help="Model: smollm2-135m (default), a HF Llama folder, or a .gguf file."
)
ADAPTER = typer.Option("default", "--adapter", help="Infini-attention adapter file, 'default' or 'none'.")
SEGMENT = typer.Option(None, "--segment-len", help="Tokens per segment (default: the adapter's).")
CUT_WINDOW = typer.Option(
    None,
    "--cut-window",
    help="A segment may end up to this many tokens early, at a paragraph, line, sentence or word end"
    " (default: segment length / 8; 0: fixed cuts).",
)
MAX_NEW = typer.Option(256, "--max-new-tokens", help="Longest answer, in tokens.")
TEMP = typer.Option(0.0, "--temperature", help="0 = greedy (deterministic).")
SEED = typer.Option(None, "--seed", help="Random seed for sampling.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or notices on stderr.")
NO_CACHE = typer.Option(False, "--no-cache", help="Read again even if this input's memory is cached.")
JSON = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")
DEVICE = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:N.")
DTYPE = typer.Option(None, "--dtype", help="auto (default: bf16 where the hardware has it), fp32, bf16.")
PASSWORD = typer.Option(None, "--password", help="Password of encrypted PDFs.")
RESUME = typer.Option(False, "--resume", help="Continue an interrupted read of the same inputs.")
THREADS = typer.Option(None, "--threads", help="CPU threads (default: all cores; fewer on a busy machine).")


def _session(display: Display, **kw):
    from infinicli.session import Options, Session

    opts = Options(
        model=kw["model"],
        adapter=kw["adapter"],
        segment_len=kw["segment_len"],
        cut_window=kw["cut_window"],
        device=kw["device"],
        dtype=kw["dtype"],
        use_cache=not kw["no_cache"],
        password=kw["password"],
        resume=kw["resume"],
        max_new_tokens=kw.get("max_new_tokens", 256),
        temperature=kw.get("temperature", 0.0),
        seed=kw.get("seed"),
        threads=kw.get("threads"),
    )
    if opts.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if opts.temperature < 0:
        raise UsageError("--temperature must be >= 0")
    return Session(opts, on_notice=display.notice, on_stage=display.stage)


def _read_memory(session, display: Display, paths: list[str]):
    if not paths:
        if sys.stdin.isatty():
            raise UsageError("no input: give a PATH, or pipe text on stdin")
        paths = ["-"]
    try:
        res = session.memory_for(paths, on_progress=display.progress)
    except KeyboardInterrupt:
        display.stop()
        display.notice("interrupted: the reading so far is checkpointed; run again with --resume to continue")
        raise
    finally:
        display.stop()
    st = res.state
    if res.from_cache:
        display.notice(
            f"memory of {res.source_label} ({st.tokens_read:,} tokens) loaded in {res.seconds:.2f} s"
        )
    else:
        rate = (st.tokens_read / res.seconds) if res.seconds > 0 else 0
        skipped = st.skipped
        msg = (
            f"read {len(st.sources)} source(s), {st.tokens_read:,} tokens, {st.memory.segments:,} segments "
            f"in {res.seconds:.1f} s ({rate:,.0f} tok/s); memory {human_bytes(st.memory.nbytes())}"
        )
        if skipped:
            msg += f"; skipped {len(skipped)}: " + ", ".join(f"{s['name']} ({s['reason']})" for s in skipped)
        display.notice(msg)
    return res


def _payload(res, answer: str | None, seconds: float) -> dict:
    st = res.state
    out = {
        "answer": answer,
        "tokens_read": st.tokens_read,
        "segments": st.memory.segments,
        "seconds": round(seconds, 3),
        "read_seconds": round(res.seconds, 3),
        "memory_bytes": st.memory.nbytes(),
        "from_cache": res.from_cache,
        "sources": st.sources,
        "skipped": st.skipped,
    }
    return out


def _answer(session, display: Display, res, prompt: str, as_json: bool, t0: float) -> None:
    pieces: list[str] = []
    for piece in session.answer(res.state, prompt):
        pieces.append(piece)
        if not as_json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    answer = "".join(pieces).strip()
    if as_json:
        out = _payload(res, answer, time.perf_counter() - t0)
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()


@app.command()
def ask(
    args: list[str] = typer.Argument(
        ...,
        metavar="[PATH]... QUESTION",
        help="Inputs (files, folders, '-', or a memory file), then the question.",
    ),
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    cut_window: int = CUT_WINDOW,
    max_new_tokens: int = MAX_NEW,
    temperature: float = TEMP,
    seed: int = SEED,
    quiet: bool = QUIET,
    no_cache: bool = NO_CACHE,
    json_out: bool = JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
    password: str = PASSWORD,
    resume: bool = RESUME,
    threads: int = THREADS,
) -> None:
    """Answer QUESTION about the inputs (stdin when no PATH is given)."""
    kw = dict(locals())
    t0 = time.perf_counter()
    *paths, question = args
    if not question.strip():
        raise UsageError("the question is empty")
    display = Display(quiet)
    session = _session(display, **kw)
    try:
        res = _read_memory(session, display, paths)
        _answer(session, display, res, question, json_out, t0)
    finally:
        session.cleanup()


@app.command()
def summarize(
    paths: list[str] = typer.Argument(None, metavar="[PATH]...", help="Inputs (stdin when none)."),
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    cut_window: int = CUT_WINDOW,
    max_new_tokens: int = MAX_NEW,
    temperature: float = TEMP,
    seed: int = SEED,
    quiet: bool = QUIET,
    no_cache: bool = NO_CACHE,
    json_out: bool = JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
    password: str = PASSWORD,
    resume: bool = RESUME,
    threads: int = THREADS,
) -> None:
    """Summarise the inputs from the model's memory."""
    kw = dict(locals())
    from infinicli.session import SUMMARY_PROMPT

    t0 = time.perf_counter()
    display = Display(quiet)
    session = _session(display, **kw)
    try:
        res = _read_memory(session, display, list(paths or []))
        _answer(session, display, res, SUMMARY_PROMPT, json_out, t0)
    finally:
        session.cleanup()


@app.command()
def read(
    paths: list[str] = typer.Argument(None, metavar="[PATH]...", help="Inputs (stdin when none)."),
    output: str = typer.Option(..., "--output", "-o", help="Memory file to write."),
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    cut_window: int = CUT_WINDOW,
    quiet: bool = QUIET,
    no_cache: bool = NO_CACHE,
    json_out: bool = JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
    password: str = PASSWORD,
    resume: bool = RESUME,
    threads: int = THREADS,
) -> None:
    """Read the inputs and save their memory to a file, to ask later without reading again."""
    kw = dict(locals())
    t0 = time.perf_counter()
    display = Display(quiet)
    session = _session(display, **kw)
    try:
        res = _read_memory(session, display, list(paths or []))
        session.save_state(output, res.state, complete=True)
        display.notice(f"memory saved to {output}")
        if json_out:
            out = _payload(res, None, time.perf_counter() - t0)
            out["output"] = output
            del out["answer"]
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    finally:
        session.cleanup()
