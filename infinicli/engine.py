"""Streaming engine: reader events → tokens → segments (cut at text boundaries, see segmenting) → memory.

It holds at most one segment of tokens (plus the tokenizer's bounded carry-over) and the compressive memory,
however long the input. It knows nothing about files or terminals: readers feed it events, progress goes out
through a callback, and the caller decides what to do on interruption (the state is always consistent between
segments, so it can be checkpointed and resumed exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from infinicli.loading import LoadedModel
from infinicli.model import Memory
from infinicli.readers import Event, Skipped, SourceDone, SourceStart, TextPiece
from infinicli.segmenting import Segmenter, for_tokenizer
from infinicli.tokenizer import Tokenizer

DOC_PLACEHOLDER = "\x00DOCUMENT\x00"


def file_marker(name: str) -> str:
    """Text inserted where each file starts, so the model (and answers) can say where something was."""
    return f"\n\n===== file: {name} =====\n\n"


@dataclass
class Progress:
    source: str
    tokens_read: int
    tokens_estimated: int | None
    segments: int
    tokens_per_s: float
    eta_s: float | None
    memory_bytes: int
    elapsed_s: float


@dataclass
class ReadState:
    """Everything needed to continue reading or to answer: memory, the unfinished segment, bookkeeping."""

    memory: Memory
    tail: list[int] = field(default_factory=list)  # tokens of the unfinished last segment
    tokens_written: int = 0  # tokens already folded into memory
    sources: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False  # the whole input has been read

    @property
    def tokens_read(self) -> int:
        return self.tokens_written + len(self.tail)


def chat_frame(tokenizer: Tokenizer) -> tuple[str, str]:
    """(prefix, suffix) that the chat template puts around a user message: document goes in between."""
    text = tokenizer.chat_prompt([{"role": "user", "content": DOC_PLACEHOLDER}], add_generation_prompt=True)
    prefix, _, suffix = text.partition(DOC_PLACEHOLDER)
    return prefix, suffix


class Engine:
    """Reads token streams into an Infini-attention model's memory, one segment at a time."""

    def __init__(
        self,
        loaded: LoadedModel,
        tokenizer: Tokenizer,
        segment_len: int | None = None,
        cut_window: int | None = None,
    ):
        """cut_window: a segment may end up to this many tokens early at a paragraph, line, sentence or word
        end (None: segment_len // 8; 0: fixed cuts every segment_len tokens)."""
        self.lm = loaded
        self.model = loaded.model
        self.tok = tokenizer
        self.cut_window_setting = cut_window
        self.segment_len = int(segment_len or self.model.icfg.segment_len)  # builds self.segmenter
        self.prefix, self.turn_suffix = chat_frame(tokenizer)
        self.prefix_ids = tokenizer.encode_with_specials(self.prefix)

    @property
    def segment_len(self) -> int:
        return self.segmenter.size

    @segment_len.setter
    def segment_len(self, value: int) -> None:
        self.segmenter: Segmenter = for_tokenizer(self.tok, int(value), self.cut_window_setting)

    @property
    def cut_window(self) -> int:
        return self.segmenter.window

    def new_state(self) -> ReadState:
        return ReadState(memory=self.model.empty_memory(1))

    # -- tokens --------------------------------------------------------------------------------------
    def document_tokens(self, events: Iterable[Event], state: ReadState) -> Iterator[list[int]]:
        """Tokens of the framed document; updates state.sources / state.skipped as events pass."""
        current: dict | None = None

        def texts() -> Iterator[str]:
            nonlocal current
            for ev in events:
                if isinstance(ev, SourceStart):
                    current = {"name": ev.source.name, "kind": ev.source.kind, "size": ev.source.size}
                    state.sources.append(current)
                    yield file_marker(ev.source.name)
                elif isinstance(ev, TextPiece):
                    yield ev.text
                elif isinstance(ev, SourceDone):
                    if current is not None:
                        current.update(sha256=ev.sha256, bytes_read=ev.bytes_read, pages=ev.pages)
                elif isinstance(ev, Skipped):
                    state.skipped.append({"name": ev.name, "reason": ev.reason})

        yield list(self.prefix_ids)
        yield from self.tok.encode_stream(texts())

    # -- reading -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def write_segment(self, state: ReadState, n: int) -> None:
        """Fold the first n tail tokens into memory as one segment. The state changes only after the forward
        pass, in one step, so an interruption (Ctrl-C) leaves it consistent: the segment is either fully in
        memory or still in the tail."""
        ids = torch.tensor([state.tail[:n]], dtype=torch.long, device=self.lm.device)
        _, new_memory = self.model.forward_segment(ids, state.memory, write=True, logits=None)
        state.memory, state.tokens_written, state.tail = new_memory, state.tokens_written + n, state.tail[n:]

    def write_ready(self, state: ReadState, on_segment: Callable[[ReadState], None] | None = None) -> None:
        """Write every segment the tail already determines (on_segment after each one)."""
        while (n := self.segmenter.cut(state.tail)) is not None:
            self.write_segment(state, n)
            if on_segment is not None:
                on_segment(state)

    def read(
        self,
        events: Iterable[Event],
        state: ReadState | None = None,
        *,
        total_bytes: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_segment: Callable[[ReadState], None] | None = None,
        progress_every_s: float = 0.25,
    ) -> ReadState:
        """Read all events into `state` (a new one if None). A resumed state skips the tokens it already has.

        on_segment is called after every segment written (the state is consistent there: checkpoint it).
        """
        state = state or self.new_state()
        resume_skip = state.tokens_read
        resuming = resume_skip > 0
        if resuming:  # bookkeeping is rebuilt from the replayed stream
            state.sources, state.skipped = [], []
        t0 = time.perf_counter()
        last_report = 0.0
        new_tokens = 0
        seen = 0
        chars_per_token = 4.0
        for chunk in self.document_tokens(events, state):
            if resume_skip:
                take = min(resume_skip, len(chunk))
                resume_skip -= take
                seen += take
                chunk = chunk[take:]
                if not chunk:
                    continue
            state.tail.extend(chunk)
            seen += len(chunk)
            new_tokens += len(chunk)
            self.write_ready(state, on_segment)
            now = time.perf_counter()
            if on_progress is not None and now - last_report >= progress_every_s:
                last_report = now
                on_progress(self._progress(state, total_bytes, new_tokens, now - t0, chars_per_token))
        state.complete = True
        if on_progress is not None:
            on_progress(self._progress(state, None, new_tokens, time.perf_counter() - t0, chars_per_token))
        return state

    def _progress(
        self, state: ReadState, total_bytes: int | None, new_tokens: int, elapsed: float, cpt: float
    ) -> Progress:
        read_bytes = sum(s.get("bytes_read") or 0 for s in state.sources)
        est = None
        if total_bytes:
            # tokens per byte so far (after the first finished source), else ~4 bytes per token
            ratio = (state.tokens_read / read_bytes) if read_bytes > 0 else 1 / cpt
            est = max(int(total_bytes * ratio), state.tokens_read)
        rate = new_tokens / elapsed if elapsed > 0 else 0.0
        eta = (est - state.tokens_read) / rate if (est and rate > 0) else None
        return Progress(
            source=state.sources[-1]["name"] if state.sources else "",
            tokens_read=state.tokens_read,
            tokens_estimated=est,
            segments=state.memory.segments,
            tokens_per_s=rate,
            eta_s=eta,
            memory_bytes=state.memory.nbytes(),
            elapsed_s=elapsed,
        )

    # -- asking --------------------------------------------------------------------------------------
    def question_tokens(self, question: str) -> list[int]:
        """Tokens that end the user turn with the question and open the assistant's answer."""
        return self.tok.encode("\n\n" + question.strip()) + self.tok.encode_with_specials(self.turn_suffix)

    def final_segment(self, state: ReadState, prompt: list[int]) -> tuple[Memory, list[int]]:
        """Memory and tokens of the final segment: chat opener + unfinished tail + prompt.

        The final segment re-opens the user turn (the opener read at the start sits only in memory): with it
        the model treats the local text and the question as one chat message (measured: the base model
        answers a question about the local text correctly with it, and wrongly without).

        The final segment may grow to two segment lengths (local attention handles that) so the question stays
        whole; beyond that, segments are written to a copy of the memory first, cut as reading cuts them (the
        saved state is left untouched, so the same memory can be asked again).
        """
        toks = list(state.tail) + list(prompt)
        S = self.segment_len
        scratch = ReadState(memory=state.memory, tail=toks)
        while len(scratch.tail) > 2 * S:
            self.write_segment(scratch, self.segmenter.cut(scratch.tail))  # decided: the tail exceeds 2 S
        toks = self.prefix_ids + scratch.tail
        return scratch.memory, toks
