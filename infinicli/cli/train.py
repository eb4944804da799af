"""`infini train`: train the Infini-attention adapter (gates, LoRA) from a TOML recipe.

The recipe is infinicli/train/default.toml unless --config names another; `--set section.key=value` and the
common flags override it. Progress goes to stderr, one line per logged step; the run folder (--out) holds
config.toml, metrics.jsonl, checkpoint.safetensors (resumable with --resume) and adapter.safetensors (use
it with `infini ask --adapter`). Under torchrun every rank runs this command; only rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from infinicli.cli import app
from infinicli.errors import UsageError


def _line(p) -> str:
    def f(v, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return (
        f"step {p.step}/{p.steps} loss {p.loss:.3f} ans {f(p.answer_loss, '.3f')} lm {f(p.lm_loss, '.3f')} "
        f"kl {f(p.kl, '.4f')} "
        + (f"read {p.read:.3f} " if p.read is not None else "")
        + f"acc {f(p.acc, '.2f')} acc50 {f(p.acc_avg, '.2f')} "
        f"tokacc {f(p.token_acc, '.2f')} "
        f"seg {p.segments:.1f} gate {p.gate:.3f} gnorm {p.grad_norm:.2f} lr {p.lr:.2e} "
        f"{p.tokens_per_s:,.0f} tok/s {p.elapsed_s:,.0f} s"
    )


@app.command()
def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="Recipe TOML (default: the built-in)."),
    sets: list[str] = typer.Option([], "--set", help="Override a key: section.key=value (repeatable)."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (run.steps)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run folder (run.out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's checkpoint."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda (run.device)."),
    segment_len: int | None = typer.Option(None, "--segment-len", help="Tokens per segment."),
    lr: float | None = typer.Option(None, "--lr", help="LoRA learning rate (optim.lr)."),
    gate_lr: float | None = typer.Option(None, "--gate-lr", help="Gate learning rate (optim.gate_lr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Train the memory gates (and LoRA) on passkey, BABILong-style and book data."""
    from infinicli.train.config import CONFIG_NAME, ConfigError, load_config, read_toml

    overrides = list(sets)
    for key, value in (
        ("run.steps", steps),
        ("run.out", out),
        ("run.device", device),
        ("model.segment_len", segment_len),
        ("optim.lr", lr),
        ("optim.gate_lr", gate_lr),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        cfg = load_config(config, overrides)
        saved = Path(cfg.run.out) / CONFIG_NAME
        if resume and config is None and saved.is_file():  # a resumed run keeps its own recipe
            cfg = load_config(None, overrides, base=read_toml(saved))
    except ConfigError as e:
        raise UsageError(str(e)) from None

    def notice(msg: str) -> None:
        if not quiet:
            sys.stderr.write(f"infini: {msg}\n")
            sys.stderr.flush()

    def progress(p) -> None:
        if not quiet:
            sys.stderr.write(_line(p) + "\n")
            sys.stderr.flush()

    from infinicli.train.loop import train as run_training

    adapter = run_training(cfg, resume=resume, on_progress=progress, on_notice=notice)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(f"{adapter}\n")
