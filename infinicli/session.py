"""One command's work, UI-free: resolve the model, get a document's memory (saved file, cache or a fresh
read with checkpoints), and answer from it. The CLI wraps this with a terminal; benchmarks and tests call it
directly. Progress and notices leave through callbacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from infinicli.errors import InputError, ResourceError, UsageError

CACHE_KEEP = 32  # memory files kept in the automatic cache (least recently used are removed)
CHECKPOINT_EVERY_S = 30.0

SUMMARY_PROMPT = (
    "Summarize the text above in a few sentences: what it is about and its most important points."
)


@dataclass
class Options:
    model: str | None = None
    adapter: str | None = "default"
    segment_len: int | None = None
    cut_window: int | None = None  # None: the engine's default (segment_len // 8)
    device: str | None = None
    dtype: str | None = None
    use_cache: bool = True
    password: str | None = None
    resume: bool = False
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int | None = None
    threads: int | None = None  # CPU threads for torch (None: all cores)


@dataclass
class MemoryResult:
    state: object  # engine.ReadState
    meta: dict
    from_cache: bool
    seconds: float
    source_label: str
    stats: dict = field(default_factory=dict)


def cache_dir() -> Path:
    from infinicli.models import infini_home

    return infini_home() / "memcache"


class Session:
    """Model, tokenizer and engine for one command, loaded on first need."""

    def __init__(
        self,
        opts: Options,
        *,
        on_notice: Callable[[str], None] | None = None,
        on_stage: Callable[[str, float | None], None] | None = None,
    ):
        self.opts = opts
        self.notice = on_notice or (lambda msg: None)
        self.stage = on_stage or (lambda msg, frac: None)
        self._engine = None
        self.stdin_spool: Path | None = None

    # -- model ---------------------------------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            self._engine = self._load()
        return self._engine

    def _load(self):
        import torch

        from infinicli.engine import Engine
        from infinicli.loading import bf16_is_native, build_model, pick_device, pick_dtype
        from infinicli.models import infini_home, model_fingerprint, resolve_model
        from infinicli.tokenizer import load_tokenizer

        model_dir = resolve_model(self.opts.model, progress=self.stage)
        device = pick_device(self.opts.device)
        dtype = pick_dtype(self.opts.dtype, device)
        if dtype == torch.bfloat16 and not bf16_is_native(device):
            self.notice("--dtype bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); fp32 is faster here")
        if self.opts.threads is not None and self.opts.threads < 1:
            raise UsageError("--threads must be at least 1")
        if device.type == "cpu":
            torch.set_num_threads(self.opts.threads or max(1, os.cpu_count() or 1))
        if self.opts.segment_len is not None and self.opts.segment_len < 16:
            raise UsageError("--segment-len must be at least 16 tokens")
        cw, seg = self.opts.cut_window, self.opts.segment_len
        if cw is not None and (cw < 0 or (seg is not None and cw >= seg)):
            raise UsageError("--cut-window must be at least 0 and less than the segment length")
        loaded = build_model(
            model_dir,
            adapter=self.opts.adapter,
            device=device,
            dtype=dtype,
            segment_len=self.opts.segment_len,
            model_fingerprint=model_fingerprint(model_dir),
        )
        if loaded.adapter_path is None and self.opts.adapter == "default":
            self.notice("no trained Infini-attention adapter for this model: its memory is untrained")
        tok = load_tokenizer(model_dir, cache_dir=infini_home() / "derived")
        try:
            return Engine(loaded, tok, cut_window=self.opts.cut_window)
        except ValueError as err:  # a cut window not below the adapter's segment length
            raise UsageError(f"--cut-window: {err}") from None

    def identity(self) -> dict:
        e = self.engine
        return {
            "model": e.lm.model_dir.name,
            "model_fingerprint": e.lm.model_fingerprint,
            "adapter_fingerprint": e.lm.adapter_fingerprint,
            "segment_len": e.segment_len,
            "cut_window": e.cut_window,
            "update_rule": e.model.icfg.update_rule,
        }

    # -- inputs --------------------------------------------------------------------------------------
    def spool_stdin(self, stream: BinaryIO | None = None) -> Path:
        """Copy stdin to a temporary file (bounded memory) so it can be hashed, cached and resumed."""
        stream = stream or sys.stdin.buffer
        cache_dir().mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="stdin-", suffix=".spool", dir=cache_dir())
        with os.fdopen(fd, "wb") as out:
            try:
                shutil.copyfileobj(stream, out, 1 << 20)
            except OSError:  # closed early: keep what arrived
                pass
        self.stdin_spool = Path(tmp)
        return self.stdin_spool

    def cleanup(self) -> None:
        if self.stdin_spool is not None:
            try:
                self.stdin_spool.unlink()
            except OSError:
                pass

    def cache_key(self, paths: Sequence[str]) -> str | None:
        ident = self.identity()
        if self.stdin_spool is not None and list(paths) == ["-"]:
            h = hashlib.sha256()
            with open(self.stdin_spool, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            inputs: object = ["stdin", h.hexdigest()]
        else:
            from infinicli.readers import fingerprint_sources

            inputs = fingerprint_sources(paths)
            if inputs is None:  # a pipe or device: no stable identity, read it every time
                return None
        blob = json.dumps([ident, inputs, self.opts.password is not None], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    # -- memory --------------------------------------------------------------------------------------
    def load_memory_file(self, path: str, *, warn_partial: bool = True) -> MemoryResult:
        from infinicli.engine import ReadState
        from infinicli.memfile import check_compatible, load_memory

        t0 = time.perf_counter()
        e = self.engine
        memory, tail, meta = load_memory(path, e.lm.device)
        check_compatible(path, meta, **{k: v for k, v in self.identity().items() if k != "model"})
        if warn_partial and not meta.get("complete", True):
            self.notice(f"{path}: this memory holds an interrupted read (use `infini read --resume`)")
        state = ReadState(
            memory=memory,
            tail=tail,
            tokens_written=int(meta["tokens_read"]) - len(tail),
            sources=meta.get("sources", []),
            skipped=meta.get("skipped", []),
            complete=bool(meta.get("complete", True)),
        )
        return MemoryResult(state, meta, True, time.perf_counter() - t0, path)

    def save_state(self, path: Path, state, *, complete: bool) -> None:
        from infinicli.memfile import save_memory

        meta = dict(self.identity())
        meta.update(
            tokens_read=state.tokens_read,
            complete=complete,
            sources=state.sources,
            skipped=state.skipped,
        )
        save_memory(path, state.memory, state.tail, meta)

    def memory_for(
        self,
        paths: Sequence[str],
        *,
        on_progress: Callable | None = None,
        stdin: BinaryIO | None = None,
    ) -> MemoryResult:
        """The memory of `paths`: a saved memory file, the automatic cache, or a fresh (resumable) read."""
        from infinicli.memfile import is_memory_file

        if len(paths) == 1 and paths[0] != "-" and os.path.isfile(paths[0]) and is_memory_file(paths[0]):
            return self.load_memory_file(paths[0])
        if any(p != "-" and is_memory_file(p) for p in paths if os.path.isfile(p)):
            raise UsageError("a memory file must be the only input")
        if "-" in paths and len(paths) > 1:
            raise UsageError("'-' (stdin) cannot be combined with other inputs")
        read_paths = list(paths)
        if read_paths == ["-"]:
            self.spool_stdin(stdin)
        key = self.cache_key(read_paths)
        cdir = cache_dir()
        try:
            cdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResourceError(f"{cdir}: cannot create the memory cache ({e.strerror})") from None
        if key is None:
            if self.opts.resume:
                raise UsageError("--resume needs regular files or stdin, not a pipe or device path")
            return self._read(read_paths, None, None, None, on_progress)
        done, partial = cdir / f"{key}.mem", cdir / f"{key}.partial.mem"
        if self.opts.use_cache and done.exists():
            try:
                res = self.load_memory_file(str(done))
                os.utime(done)
                res.source_label = ", ".join(s["name"] for s in res.state.sources) or "cache"
                return res
            except InputError:
                done.unlink(missing_ok=True)  # a damaged cache entry is just read again
        state = None
        if self.opts.resume:
            if not partial.exists():
                raise UsageError("nothing to resume: no interrupted read of these inputs was found")
            state = self.load_memory_file(str(partial), warn_partial=False).state
            self.notice(f"resuming after {state.tokens_read:,} tokens")
        elif partial.exists():
            self.notice("an interrupted read of these inputs exists; starting over (--resume continues it)")
        return self._read(read_paths, state, partial, done, on_progress)

    def _read(self, paths, state, partial: Path | None, done: Path | None, on_progress) -> MemoryResult:
        from infinicli.readers import estimate_bytes, read_sources

        e = self.engine
        t0 = time.perf_counter()
        stdin_file = open(self.stdin_spool, "rb") if self.stdin_spool is not None else None
        last_ckpt = [time.monotonic()]
        state = state or e.new_state()

        def checkpoint(st) -> None:
            if time.monotonic() - last_ckpt[0] >= CHECKPOINT_EVERY_S:
                self._checkpoint(partial, st)
                last_ckpt[0] = time.monotonic()

        try:
            # pieces of about one segment of text keep the engine's token buffer near one segment
            chunk = max(1024, 4 * e.segment_len)
            events = self._announce_skips(
                read_sources(paths, password=self.opts.password, stdin=stdin_file, chunk_chars=chunk)
            )
            total = estimate_bytes(paths) if self.stdin_spool is None else self.stdin_spool.stat().st_size
            e.read(events, state, total_bytes=total, on_progress=on_progress, on_segment=checkpoint)
        except KeyboardInterrupt:
            self._checkpoint(partial, state)
            raise
        finally:
            if stdin_file is not None:
                stdin_file.close()
        seconds = time.perf_counter() - t0
        if done is not None and partial is not None:
            self.save_state(done, state, complete=True)
            partial.unlink(missing_ok=True)
            self._prune_cache()
        label = ", ".join(s["name"] for s in state.sources)
        return MemoryResult(state, self.identity(), False, seconds, label)

    def _announce_skips(self, events):
        from infinicli.readers import Skipped

        for ev in events:
            if isinstance(ev, Skipped):
                self.notice(f"skipped {ev.name}: {ev.reason}")
            yield ev

    def _checkpoint(self, partial: Path | None, state) -> None:
        if partial is not None and state.tokens_read > 0:
            self.save_state(partial, state, complete=False)

    def _prune_cache(self) -> None:
        files = sorted(cache_dir().glob("*.mem"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[CACHE_KEEP:]:
            old.unlink(missing_ok=True)

    # -- answering -----------------------------------------------------------------------------------
    def answer(self, state, question: str) -> Iterator[str]:
        """Stream the answer text, piece by piece, generated from the memory + the final segment."""
        from infinicli.generate import generate

        e = self.engine
        memory, final = e.final_segment(state, e.question_tokens(question))
        stop = {e.tok.eos_id, e.tok.special_tokens.get("<|endoftext|>", e.tok.eos_id)}
        dec = e.tok.decoder()
        o = self.opts
        for tid in generate(
            e.model,
            memory,
            final,
            max_new_tokens=o.max_new_tokens,
            temperature=o.temperature,
            top_p=o.top_p,
            seed=o.seed,
            stop_ids=sorted(stop),
        ):
            piece = dec.push(tid)
            if piece:
                yield piece
        rest = dec.flush()
        if rest:
            yield rest
