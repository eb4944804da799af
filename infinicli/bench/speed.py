"""`infini bench speed`: reading speed, memory flatness, follow-up latency, start-up and tokenizer speed.

Every figure is measured in the same run next to its baseline and reported as a ratio:
  - reading tokens/s (our engine: no LM head, bf16 where the CPU has it) vs a plain transformers forward
    pass of the same base model in fp32 over the same tokens in chunks of the same segment length;
  - llama.cpp prompt processing on the same GGUF (when llama-cpp-python is installed);
  - peak RSS of `infini read` on a long input vs a 10K-token input (subprocesses, like /usr/bin/time -v);
  - wall time of a follow-up `infini ask` on an unchanged document (model load included; median of 3);
  - `infini --help` wall time;
  - tokenizer tokens/s on the corpus books;
  - on CUDA, when present: reading tokens/s in bf16.
No terminal output here: results are returned as a dict; the CLI prints them.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from infinicli.session import Options, Session

REPO = Path(__file__).resolve().parent.parent.parent


def corpus_dir() -> Path:
    return Path(os.environ.get("INFINI_CORPUS", REPO.parent / "shared" / "corpus"))


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def book_tokens(session: Session, book: Path, n: int) -> list[int]:
    """The first n tokens of `book` with the session's tokenizer (text decoded like the readers do)."""
    from infinicli.readers import TextPiece, read_sources

    out: list[int] = []
    pieces = (ev.text for ev in read_sources([str(book)]) if isinstance(ev, TextPiece))
    for chunk in session.engine.tok.encode_stream(pieces):
        out.extend(chunk)
        if len(out) >= n:
            break
    return out[:n]


def time_chunks(fn: Callable[[list[int]], None], tokens: list[int], seg: int, warmup: int = 1) -> float:
    """tokens/s of fn over consecutive chunks of `seg` tokens (after `warmup` chunks, not timed)."""
    chunks = [tokens[i : i + seg] for i in range(0, len(tokens) - seg + 1, seg)]
    for c in chunks[:warmup]:
        fn(c)
    t0 = time.perf_counter()
    for c in chunks[warmup:]:
        fn(c)
    dt = time.perf_counter() - t0
    return (len(chunks) - warmup) * seg / dt


def time_interleaved(fns: dict[str, Callable[[list[int]], None]], tokens: list[int], seg: int) -> dict:
    """tokens/s of each fn over the same chunks of `seg` tokens, the fns taking turns chunk by chunk (after
    one untimed warm-up chunk each), so that a machine whose speed drifts slows every contender alike."""
    chunks = [tokens[i : i + seg] for i in range(0, len(tokens) - seg + 1, seg)]
    spent = dict.fromkeys(fns, 0.0)
    for c in chunks[:1]:
        for fn in fns.values():
            fn(c)
    for c in chunks[1:]:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(c)
            spent[name] += time.perf_counter() - t0
    n = (len(chunks) - 1) * seg
    return {name: n / dt if dt > 0 else 0.0 for name, dt in spent.items()}


def transformers_forward(model_dir: Path) -> Callable[[list[int]], None]:
    """A plain transformers LlamaForCausalLM forward in fp32 (logits included) of one chunk."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    @torch.inference_mode()
    def fwd(chunk: list[int]) -> None:
        hf(torch.tensor([chunk]), use_cache=False)

    return fwd


def engine_writer(session: Session) -> Callable[[list[int]], None]:
    """Our reading path for one chunk: a segment written to memory (carried over), no LM head."""
    e = session.engine
    state = e.new_state()

    def write(chunk: list[int]) -> None:
        state.tail = list(chunk)
        e.write_segment(state, len(chunk))

    return write


def transformers_baseline(model_dir: Path, tokens: list[int], seg: int) -> float:
    """Plain transformers LlamaForCausalLM forward in fp32 (logits included), chunk by chunk."""
    return time_chunks(transformers_forward(model_dir), tokens, seg)


def engine_rate(session: Session, tokens: list[int], seg: int) -> float:
    """Our reading path: segments written to memory, no LM head."""
    return time_chunks(engine_writer(session), tokens, seg)


def llama_cpp_rate(gguf: Path | None, tokens: list[int], seg: int) -> float | None:
    """llama.cpp prompt processing tokens/s on the same GGUF (None when llama-cpp-python is absent)."""
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found]
    except ImportError:
        return None
    if gguf is None or not gguf.is_file():
        return None
    llm = Llama(model_path=str(gguf), n_ctx=seg, n_batch=seg, n_threads=os.cpu_count(), verbose=False)

    def ev(chunk: list[int]) -> None:
        llm.reset()
        llm.eval(chunk)

    return time_chunks(ev, tokens, seg)


def _infini(*args: str, env: dict | None = None) -> tuple[float, int, str]:
    """Run `python -m infinicli ARGS` → (wall seconds, peak RSS KiB of the child, stderr)."""
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run([sys.executable, "-m", "infinicli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        raise RuntimeError(f"infini {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall, max(after, before), r.stderr


def peak_rss_kib(args: list[str], env: dict) -> int:
    """Peak RSS of one `infini` run, measured by GNU time when present (as /usr/bin/time -v reports it)."""
    if Path("/usr/bin/time").exists():
        with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
            cmd = ["/usr/bin/time", "-f", "%M", "-o", tf.name, sys.executable, "-m", "infinicli", *args]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"infini {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:]}")
            return int(tf.read().strip().splitlines()[-1])
    return _infini(*args, env=env)[1]


def write_long_text(path: Path, n_tokens: int, session: Session, books: list[Path]) -> int:
    """A text of about n_tokens tokens: the corpus books repeated (numbered copies), streamed to disk."""
    texts = [b.read_bytes().decode("cp1252", errors="replace") for b in books]
    per_char = len(session.engine.tok.encode(texts[0][:200_000])) / 200_000
    need_chars = int(n_tokens / per_char)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        i = 0
        while written < need_chars:
            t = texts[i % len(texts)][: need_chars - written]
            f.write(t)
            written += len(t)
            i += 1
    return written


def run_speed(
    *,
    tokens: int = 32768,
    segment_len: int | None = None,
    rss_tokens: tuple[int, int] = (10_000, 1_000_000),
    model: str | None = None,
    gguf: Path | None = None,
    include: tuple[str, ...] = ("read", "baseline", "llamacpp", "rss", "ask", "help", "tokenizer", "cuda"),
    progress: Callable[[str], None] | None = None,
) -> dict:
    say = progress or (lambda msg: None)
    res: dict = {"machine": machine(), "tokens": tokens}
    book = corpus_dir() / "books" / "war_and_peace.txt"
    if not book.is_file():
        book = REPO / "sample_docs" / "harbor_chronicle.txt"
    res["book"] = str(book)
    session = Session(Options(model=model, segment_len=segment_len, use_cache=False))
    e = session.engine
    seg = e.segment_len
    res["segment_len"], res["dtype"] = seg, str(e.lm.dtype).replace("torch.", "")
    if e.lm.device.type == "cpu":
        from infinicli.kernels import native_attention_status

        res["attention"] = native_attention_status()  # "native" (bf16 kernels) or why torch's ops are used
    toks = book_tokens(session, book, tokens)
    res["tokens"] = len(toks)

    if "read" in include and "baseline" in include:
        say(f"reading {len(toks):,} tokens: the engine ({res['dtype']}) and plain transformers fp32 in turns")
        rates = time_interleaved(
            {"read": engine_writer(session), "baseline": transformers_forward(e.lm.model_dir)}, toks, seg
        )
        res["read_tok_s"], res["baseline_fp32_tok_s"] = rates["read"], rates["baseline"]
        res["read_vs_baseline"] = res["read_tok_s"] / res["baseline_fp32_tok_s"]
        res["interleaved"] = True
    elif "read" in include:
        say(f"reading {len(toks):,} tokens with the engine ({res['dtype']})")
        res["read_tok_s"] = engine_rate(session, toks, seg)
    elif "baseline" in include:
        say("plain transformers forward, fp32")
        res["baseline_fp32_tok_s"] = transformers_baseline(e.lm.model_dir, toks, seg)
    if "llamacpp" in include:
        say("llama.cpp prompt processing")
        rate = llama_cpp_rate(gguf, toks, seg)
        res["llamacpp_tok_s"] = rate
        if rate and "read_tok_s" in res:
            res["read_vs_llamacpp"] = res["read_tok_s"] / rate
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="infini-bench-") as td:
        tdp = Path(td)
        if "rss" in include:
            books = [p for p in (corpus_dir() / "books").glob("*.txt")] or [book]
            rss = {}
            for n in rss_tokens:
                f = tdp / f"long-{n}.txt"
                write_long_text(f, n, session, sorted(books))
                say(f"peak RSS of `infini read` on {n:,} tokens (subprocess)")
                t0 = time.perf_counter()
                rss[n] = peak_rss_kib(
                    ["read", str(f), "-o", str(tdp / "m.mem"), "--no-cache", "-q"]
                    + (["--model", model] if model else []),
                    env,
                )
                res.setdefault("rss_seconds", {})[str(n)] = time.perf_counter() - t0
                f.unlink()
            lo, hi = rss_tokens
            res["rss_kib"] = {str(k): v for k, v in rss.items()}
            res["rss_ratio"] = rss[hi] / rss[lo]
        if "ask" in include:
            doc = REPO / "sample_docs" / "harbor_chronicle.txt"
            q = "When does the ferry to Gull Island leave?"
            extra = ["--model", model] if model else []
            say("first and second `infini ask` on the same document")
            first, _, _ = _infini(
                "ask", str(doc), q, "--max-new-tokens", "16", "-q", "--no-cache", *extra, env=env
            )
            again = [
                _infini("ask", str(doc), q, "--max-new-tokens", "16", "-q", *extra, env=env)[0]
                for _ in range(3)
            ]
            res["ask_first_s"], res["ask_again_s"] = first, again
            res["ask_second_s"] = sorted(again)[1]  # the median of three follow-up asks
    if "help" in include:
        walls = []
        for _ in range(5):
            walls.append(_infini("--help")[0])
        res["help_s"] = min(walls)
    if "tokenizer" in include:
        books = sorted((corpus_dir() / "books").glob("*.txt")) or [book]
        texts = [b.read_bytes().decode("cp1252", errors="replace") for b in books]
        tok = e.tok
        t0 = time.perf_counter()
        n = sum(len(tok.encode(t)) for t in texts)
        res["tokenizer_tok_s"] = n / (time.perf_counter() - t0)
        res["tokenizer_tokens"] = n
    if "cuda" in include and torch.cuda.is_available():
        say("CUDA reading, bf16")
        cs = Session(
            Options(model=model, segment_len=segment_len, device="cuda", dtype="bf16", use_cache=False)
        )
        res["cuda_read_tok_s"] = engine_rate(cs, toks, seg)
    return res


TARGETS = {
    "read_vs_baseline": ">= 2.5x",
    "rss_ratio": "<= 1.1x",
    "ask_second_s": "<= 3 s",
    "help_s": "<= 0.3 s",
    "tokenizer_tok_s": ">= 1M tok/s",
}


def format_speed(res: dict) -> str:
    """A plain-text table: figure, value, baseline, ratio, target."""
    rows = [("figure", "value", "baseline", "ratio", "target")]

    def add(name: str, value: str, base: str = "", ratio: str = "", key: str = "") -> None:
        rows.append((name, value, base, ratio, TARGETS.get(key, "")))

    if "read_tok_s" in res:
        base = (
            f"{res['baseline_fp32_tok_s']:,.0f} tok/s (transformers fp32)"
            if "baseline_fp32_tok_s" in res
            else ""
        )
        ratio = f"{res['read_vs_baseline']:.2f}x" if "read_vs_baseline" in res else ""
        add(
            f"read tok/s ({res['dtype']}, seg {res['segment_len']}"
            + (", native kernels)" if res.get("attention") == "native" else ")"),
            f"{res['read_tok_s']:,.0f}",
            base,
            ratio,
            "read_vs_baseline",
        )
    if "llamacpp_tok_s" in res:
        v = res["llamacpp_tok_s"]
        add(
            "read vs llama.cpp prompt processing",
            f"{res.get('read_tok_s', 0):,.0f}",
            f"{v:,.0f} tok/s" if v else "llama-cpp-python not installed",
            f"{res['read_vs_llamacpp']:.2f}x" if res.get("read_vs_llamacpp") else "",
        )
    if "rss_kib" in res:
        (lo, a), (hi, b) = list(res["rss_kib"].items())
        add(
            f"peak RSS, read {int(hi):,} tokens",
            f"{b / 1024:,.0f} MiB",
            f"{a / 1024:,.0f} MiB at {int(lo):,}",
            f"{res['rss_ratio']:.3f}x",
            "rss_ratio",
        )
    if "ask_second_s" in res:
        add(
            "second `infini ask`, wall (median of 3)",
            f"{res['ask_second_s']:.2f} s",
            f"{res['ask_first_s']:.2f} s first ask",
            "",
            "ask_second_s",
        )
    if "help_s" in res:
        add("`infini --help`, wall", f"{res['help_s']:.3f} s", "", "", "help_s")
    if "tokenizer_tok_s" in res:
        add("tokenizer", f"{res['tokenizer_tok_s'] / 1e6:.2f}M tok/s", "", "", "tokenizer_tok_s")
    if "cuda_read_tok_s" in res:
        add("read tok/s on CUDA (bf16)", f"{res['cuda_read_tok_s']:,.0f}")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
