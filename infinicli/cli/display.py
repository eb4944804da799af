"""Terminal side of progress and notices: a live rich display on stderr when it is a terminal, sparse plain
lines otherwise, nothing with --quiet (errors still print)."""

from __future__ import annotations

import sys
import time

from rich.console import Console


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Display:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = None
        self.is_tty = sys.stderr.isatty()
        self._last_plain = 0.0

    def notice(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"infini: {msg}", markup=False)

    def stage(self, msg: str, frac: float | None = None) -> None:
        if self.quiet:
            return
        pct = f" {frac * 100:.0f}%" if frac is not None else ""
        self.console.print(f"infini: {msg}{pct}", markup=False)

    @staticmethod
    def progress_line(p) -> str:
        total = f" of ~{p.tokens_estimated:,}" if p.tokens_estimated else ""
        return (
            f"{p.source or 'reading'}: {p.tokens_read:,}{total} tokens, {p.segments:,} segments, "
            f"{p.tokens_per_s:,.0f} tok/s, ETA {human_s(p.eta_s)}, memory {human_bytes(p.memory_bytes)}"
        )

    def progress(self, p) -> None:
        if self.quiet:
            return
        if self.is_tty:
            from rich.live import Live
            from rich.text import Text

            frac = (p.tokens_read / p.tokens_estimated) if p.tokens_estimated else None
            bar = ""
            if frac is not None:
                n = int(min(1.0, frac) * 24)
                bar = "[" + "#" * n + "-" * (24 - n) + f"] {frac * 100:3.0f}% "
            text = Text(bar + self.progress_line(p), no_wrap=True, overflow="ellipsis")
            if self.live is None:
                self.live = Live(text, console=self.console, refresh_per_second=8, transient=True)
                self.live.start()
            else:
                self.live.update(text)
        else:
            now = time.monotonic()
            if now - self._last_plain >= 10.0:
                self._last_plain = now
                self.console.print(self.progress_line(p), markup=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
