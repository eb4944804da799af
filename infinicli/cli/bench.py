"""`infini bench passkey|babilong|ppl`: the benchmarks of infinicli.bench on the command line.

Tables go to stdout, per-sample progress and notices to stderr; `--json OUT` writes every per-sample result,
the table, the settings, wall times and the machine to OUT.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from infinicli.cli import app
from infinicli.cli.ask import ADAPTER, CUT_WINDOW, DEVICE, DTYPE, MODEL, QUIET, SEGMENT, THREADS
from infinicli.cli.display import Display
from infinicli.errors import UsageError

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: pass-key retrieval, BABILong-style bAbI in a haystack, perplexity with/without memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(bench_app, name="bench")

JSON_OUT = typer.Option(None, "--json", metavar="OUT", help="Write all results as JSON to the file OUT.")
BENCH_SEED = typer.Option(0, "--seed", help="Seed of the random keys, samples and haystack positions.")


def _engine(
    display: Display,
    model: str | None,
    adapter: str,
    segment_len: int | None,
    device: str | None,
    dtype: str | None,
    seed: int,
    threads: int | None,
    cut_window: int | None = None,
):
    """The loaded Engine of the options shared by every bench command."""
    from infinicli.session import Options, Session

    opts = Options(
        model=model,
        adapter=adapter,
        segment_len=segment_len,
        cut_window=cut_window,
        device=device,
        dtype=dtype,
        seed=seed,
        threads=threads,
    )
    return Session(opts, on_notice=display.notice, on_stage=display.stage).engine


def _finish(display: Display, result: dict, json_out: str | None) -> None:
    from infinicli.bench.common import write_json

    sys.stdout.write(result["table_text"] + "\n")
    sys.stdout.flush()
    m = result["model"]
    display.notice(
        f"{result['benchmark']}: adapter {m['adapter']} (segment {m['segment_len']}), "
        f"{result['machine']['device']} {result['machine']['dtype']}, wall {result['wall_seconds']:.1f} s"
    )
    if json_out:
        try:
            write_json(json_out, result)
        except OSError as e:
            raise UsageError(f"--json {json_out}: cannot write ({e.strerror})") from None
        display.notice(f"results written to {json_out}")


def _finish_run(display: Display, run: Callable[[], dict], json_out: str | None) -> None:
    """_finish(run()); after Ctrl-C, the samples finished before it are printed and written all the same
    (the JSON marked "interrupted"), then the command ends as interrupted (exit 130)."""
    from infinicli.bench.common import Interrupted

    try:
        result = run()
    except Interrupted as e:
        _finish(display, e.partial, json_out)
        display.notice(f"interrupted after {len(e.partial['results'])} finished samples (kept above)")
        raise KeyboardInterrupt from None
    _finish(display, result, json_out)


def _check_samples(samples: int) -> None:
    if samples < 1:
        raise UsageError("--samples must be at least 1")


@bench_app.command()
def passkey(
    lengths: str = typer.Option(
        "2k,8k,32k", "--lengths", help="Input lengths in tokens (k = 1024, m = 1024²)."
    ),
    samples: int = typer.Option(5, "--samples", help="Samples per length and depth."),
    depths: str = typer.Option("0,25,50,75,100", "--depths", help="Needle depths, percent of the filler."),
    json_out: str = JSON_OUT,
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    cut_window: int = CUT_WINDOW,
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = BENCH_SEED,
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Pass-key retrieval: accuracy per length (rows) and needle depth (columns)."""
    from infinicli.bench import passkey as pk
    from infinicli.bench.common import parse_ints, parse_lengths

    _check_samples(samples)
    settings = pk.Settings(
        lengths=parse_lengths(lengths), depths=parse_ints(depths, "depth", 0, 100), samples=samples, seed=seed
    )
    display = Display(quiet)
    engine = _engine(display, model, adapter, segment_len, device, dtype, seed, threads, cut_window)
    _finish_run(display, lambda: pk.run(engine, settings, log=display.notice), json_out)


@bench_app.command()
def babilong(
    task: str = typer.Option("qa1", "--task", help="bAbI task(s), comma-separated: qa1, qa2, ... qa5."),
    lengths: str = typer.Option(
        "4k,32k", "--lengths", help="Input lengths in tokens (k = 1024, m = 1024²; 0 = the facts alone)."
    ),
    samples: int = typer.Option(10, "--samples", help="Questions per task and length."),
    haystack: str = typer.Option(
        None, "--haystack", help="Book used as haystack (default: <corpus>/books/war_and_peace.txt)."
    ),
    json_out: str = JSON_OUT,
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    cut_window: int = CUT_WINDOW,
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = BENCH_SEED,
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """BABILong-style: bAbI facts hidden in book text, accuracy per length (rows) and task (columns).

    The corpus is <repo>/../shared/corpus, or $INFINI_CORPUS."""
    from infinicli.bench import babilong as bl
    from infinicli.bench.common import parse_lengths

    _check_samples(samples)
    tasks = [t.strip() for t in task.split(",") if t.strip()]
    if not tasks:
        raise UsageError("no --task given")
    settings = bl.Settings(
        tasks=tasks,
        lengths=parse_lengths(lengths, allow_zero=True),
        samples=samples,
        seed=seed,
        haystack=haystack,
    )
    for t in tasks:
        bl.task_file(t)  # a missing corpus or task fails before the model loads
    display = Display(quiet)
    engine = _engine(display, model, adapter, segment_len, device, dtype, seed, threads, cut_window)
    _finish_run(display, lambda: bl.run(engine, settings, log=display.notice), json_out)


@bench_app.command()
def ppl(
    book: str = typer.Option(
        None, "--book", help="Text file to score (default: <corpus>/books/anna_karenina.txt)."
    ),
    tokens: str = typer.Option("32k", "--tokens", help="Score the book's first N tokens (k = 1024)."),
    json_out: str = JSON_OUT,
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = BENCH_SEED,
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Perplexity with memory, without memory, and with a two-segment sliding window."""
    from infinicli.bench import ppl as pp
    from infinicli.bench.common import corpus_dir, parse_length

    settings = pp.Settings(tokens=parse_length(tokens), book=book)
    if book is None:
        corpus_dir()  # fail before the model loads
    display = Display(quiet)
    engine = _engine(display, model, adapter, segment_len, device, dtype, seed, threads)
    result: dict[str, Any] = pp.run(engine, settings, log=display.notice)
    _finish(display, result, json_out)


@bench_app.command()
def chat(
    compare_tokens: int = typer.Option(24, "--tokens", help="Greedy tokens compared per prompt."),
    json_out: str = JSON_OUT,
    model: str = MODEL,
    adapter: str = ADAPTER,
    segment_len: int = SEGMENT,
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = BENCH_SEED,
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Chat kept: greedy answers with an empty memory, adapter vs the base model, on fixed prompts."""
    from infinicli.bench import chat as ch

    if compare_tokens < 1:
        raise UsageError("--tokens must be at least 1")
    display = Display(quiet)
    engine = _engine(display, model, adapter, segment_len, device, dtype, seed, threads)
    base = _engine(display, model, "none", segment_len, device, dtype, seed, threads)
    _finish(display, ch.run(engine, base, ch.Settings(compare_tokens), log=display.notice), json_out)


@bench_app.command()
def speed(
    tokens: str = typer.Option(
        "32k", "--tokens", help="Tokens of War and Peace timed for the reading rates."
    ),
    rss_tokens: str = typer.Option("10k,1m", "--rss-tokens", help="Short and long input for peak RSS."),
    skip: str = typer.Option(
        "", "--skip", help="Comma list of parts to skip: read,baseline,llamacpp,rss,ask,help,tokenizer,cuda."
    ),
    gguf: str = typer.Option(None, "--gguf", help="GGUF file for the llama.cpp comparison."),
    model: str = MODEL,
    segment_len: int = SEGMENT,
    json_out: str = JSON_OUT,
    quiet: bool = QUIET,
) -> None:
    """Reading speed vs plain transformers (and llama.cpp), flat memory, follow-up latency, start-up."""
    import json
    from pathlib import Path

    from infinicli.bench.common import parse_lengths
    from infinicli.bench.speed import format_speed, run_speed

    display = Display(quiet)
    parts = ("read", "baseline", "llamacpp", "rss", "ask", "help", "tokenizer", "cuda")
    skipped = {p.strip() for p in skip.split(",") if p.strip()}
    unknown = skipped - set(parts)
    if unknown:
        raise UsageError(f"--skip: unknown part(s) {', '.join(sorted(unknown))}")
    rss = parse_lengths(rss_tokens)
    if len(rss) != 2:
        raise UsageError("--rss-tokens takes two sizes, e.g. 10k,1m")
    res = run_speed(
        tokens=parse_lengths(tokens)[0],
        segment_len=segment_len,
        rss_tokens=(rss[0], rss[1]),
        model=model,
        gguf=Path(gguf) if gguf else None,
        include=tuple(p for p in parts if p not in skipped),
        progress=display.notice,
    )
    sys.stdout.write(format_speed(res) + "\n")
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2, default=str) + "\n")
        display.notice(f"results written to {json_out}")
