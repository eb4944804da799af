"""Shared pieces of the benchmarks: length parsing ("2k,8k,32k,1m"), the product-path document tokens,
reading token lists into memory, answering, plain-text tables, JSON results and machine/timing details."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infinicli.errors import UsageError

Log = Callable[[str], None]

_LEN_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


def parse_length(text: str, allow_zero: bool = False) -> int:
    """'2k' → 2048, '1m' → 1048576, '1.5k' → 1536, '5000' → 5000 (k = 1024 tokens, m = 1024²)."""
    m = _LEN_RE.match(text)
    if not m:
        raise UsageError(f"bad length {text!r}: use a token count like 2048, 2k, 32k or 1m")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < (0 if allow_zero else 1):
        raise UsageError(f"bad length {text!r}: must be at least 1 token")
    return n


def parse_lengths(text: str, allow_zero: bool = False) -> list[int]:
    """Comma-separated lengths, in the order given ('2k,8k' → [2048, 8192])."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("no lengths given (e.g. --lengths 2k,8k)")
    return [parse_length(p, allow_zero) for p in parts]


def parse_ints(text: str, what: str, lo: int | None = None, hi: int | None = None) -> list[int]:
    """Comma-separated integers within [lo, hi] (e.g. depths '0,25,50,75,100')."""
    out: list[int] = []
    for p in (p.strip() for p in text.split(",")):
        if not p:
            continue
        try:
            v = int(p)
        except ValueError:
            raise UsageError(f"bad {what} {p!r}: use comma-separated integers") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise UsageError(f"bad {what} {v}: must be between {lo} and {hi}")
        out.append(v)
    if not out:
        raise UsageError(f"no {what} given")
    return out


def length_label(n: int) -> str:
    """Inverse of parse_length for round numbers: 2048 → '2k', 1048576 → '1m', 5000 → '5000'."""
    if n == 0:
        return "0"
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


# -- product path ---------------------------------------------------------------------------------------
def document_tokens(engine: Any, text: str, name: str = "document.txt") -> list[int]:
    """Exactly the tokens `Engine.read` makes of one text file `name` holding `text` (chat opener, file
    marker, text), so memory built from them is the memory `infini ask` would build."""
    from infinicli.readers import SourceDone, SourceInfo, SourceStart, TextPiece

    info = SourceInfo(name=name, path=None, size=len(text.encode()), kind="text")
    events = [SourceStart(info), TextPiece(info, text), SourceDone(info, "", len(text.encode()), None)]
    out: list[int] = []
    for chunk in engine.document_tokens(events, engine.new_state()):
        out.extend(chunk)
    return out


def read_tokens(engine: Any, tokens: Sequence[int], state: Any = None) -> Any:
    """Continue `state` (a fresh ReadState when None) with `tokens`, writing every segment they determine
    exactly as `Engine.read` does (the cuts depend only on the token stream, not on how it arrives)."""
    state = state if state is not None else engine.new_state()
    state.tail.extend(tokens)
    engine.write_ready(state)
    return state


def copy_state(state: Any) -> Any:
    """An independent copy of a ReadState (memory tensors are never modified in place, tails are)."""
    from infinicli.engine import ReadState

    return ReadState(memory=state.memory, tail=list(state.tail), tokens_written=state.tokens_written)


def stop_ids(engine: Any) -> list[int]:
    """Token ids that end an answer (same as Session.answer)."""
    tok = engine.tok
    return sorted({tok.eos_id} | {i for t, i in tok.special_tokens.items() if t == "<|endoftext|>"})


def answer(
    engine: Any,
    state: Any,
    question: str,
    *,
    prefill: str = "",
    max_new_tokens: int = 8,
    stop_at_newline: bool = False,
) -> tuple[str, int]:
    """Greedy answer to `question` from `state` through the product path; `prefill` starts the assistant's
    answer (its tokens follow the final segment). Returns (generated text without the prefill, prompt
    tokens of the final segment)."""
    from infinicli.generate import generate

    memory, final = engine.final_segment(state, engine.question_tokens(question))
    if prefill:
        final = final + engine.tok.encode(prefill)
    ids: list[int] = []
    for tid in generate(
        engine.model, memory, final, max_new_tokens=max_new_tokens, stop_ids=stop_ids(engine)
    ):
        ids.append(tid)
        if stop_at_newline:
            text = engine.tok.decode(ids)
            if text.strip() and "\n" in text.lstrip():
                break
    return engine.tok.decode(ids), len(final)


# -- results --------------------------------------------------------------------------------------------
def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with aligned columns (pastes into docs as is, reads well in a terminal)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def pct(correct: int, total: int) -> str:
    return f"{100.0 * correct / total:.0f}" if total else "-"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(engine: Any = None) -> dict:
    """Where a number was measured: platform, CPU, core count, torch version, device and dtype."""
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if engine is not None:
        info["device"] = str(engine.lm.device)
        info["dtype"] = str(engine.lm.dtype).replace("torch.", "")
        if engine.lm.device.type == "cpu":
            from infinicli.kernels import native_attention_status

            info["attention"] = native_attention_status()  # "native" or why torch's kernel is used
    return info


def model_info(engine: Any) -> dict:
    """Model, adapter and Infini-attention settings of a benchmark run."""
    lm = engine.lm
    return {
        "model": lm.model_dir.name,
        "model_dir": str(lm.model_dir),
        "adapter": str(lm.adapter_path) if lm.adapter_path else "none",
        "adapter_fingerprint": lm.adapter_fingerprint,
        "adapter_training": lm.adapter_meta.get("training"),
        "adapter_packaged": lm.adapter_meta.get("packaged"),  # segment length, averaging
        "gate_init": engine.model.icfg.gate_init,
        "segment_len": engine.segment_len,
        "cut_window": engine.cut_window,
        "update_rule": engine.model.icfg.update_rule,
        "write_chunk": engine.model.icfg.write_chunk,
    }


def write_json(path: str | Path, obj: dict) -> None:
    """Write `obj` as indented JSON, atomically (temp file, then rename)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class Interrupted(Exception):
    """Ctrl-C during a benchmark: `partial` is the JSON-ready result of the samples finished before it
    (`"interrupted": true`), for the caller to print and keep: a 1M-token run's finished samples survive."""

    def __init__(self, partial: dict):
        super().__init__("interrupted")
        self.partial = {**partial, "interrupted": True}


class Timer:
    """Wall time of named phases: `with timer("2k"): ...`, then `timer.seconds["2k"]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def corpus_dir() -> Path:
    """The shared corpus: $INFINI_CORPUS, else <repo>/../shared/corpus (UsageError when absent)."""
    env = os.environ.get("INFINI_CORPUS")
    c = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
    if not c.is_dir():
        raise UsageError(f"corpus folder {c} not found: set INFINI_CORPUS to the shared corpus folder")
    return c


def read_text(path: str | Path, max_chars: int | None = None) -> str:
    """Decoded text of a file through the product readers (UTF-8 or cp1252, CRLF → LF), up to max_chars."""
    from infinicli.readers import TextPiece, read_sources

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file")
    parts: list[str] = []
    n = 0
    for ev in read_sources([str(p)]):
        if isinstance(ev, TextPiece):
            parts.append(ev.text)
            n += len(ev.text)
            if max_chars is not None and n >= max_chars:
                break
    text = "".join(parts)
    return text if max_chars is None else text[:max_chars]
