"""The training job for a lent GPU: train with a recipe (default infinicli/train/h100.toml), then benchmark
the adapter there.

Everything lands in OUT: run/ (config.toml, metrics.jsonl, checkpoint, adapter.safetensors), results.json
(every benchmark result, rewritten after each one). The benchmarks (--evals, in the order given) are read at
--segment-len and each is skipped when the time left (--deadline, seconds from the start) is too short for it
at the reading speed measured so far. --train-stop ends training at that many seconds from the start even if
the budget's step count is not reached (the steps done are written as the adapter); --adapter skips training
and benchmarks an existing adapter. scripts/device/variants.sh runs several of these side by side.
Usage: python scripts/device/run_job.py OUT --budget 330 --deadline 560 [--config F] [--set sect.key=val ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

import torch

DEVICE = os.environ.get("JOB_DEVICE", "cuda")
K = int(os.environ.get("JOB_K", "1024"))  # the "k" of the benchmark lengths (smaller: a quick local check)
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def _mem() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def train(out: Path, config: str, budget: float, stop: float, sets: list[str]) -> None:
    from infinicli.train.config import load_config
    from infinicli.train.loop import train as run_training

    cfg = load_config(config, [f"run.out={out / 'run'}", f"run.time_budget_s={budget}", *sets])

    def progress(p) -> None:
        if time.perf_counter() - T0 > stop:
            log(f"training stopped at step {p.step} of {p.steps}: --train-stop {stop:.0f} s reached")
            raise KeyboardInterrupt  # the loop saves a checkpoint and the adapter of the steps done
        log(
            f"step {p.step}/{p.steps} segs {p.segments:.1f} loss {p.loss:.3f} ans {p.answer_loss or 0:.3f} "
            f"lm {p.lm_loss or 0:.3f} kl {p.kl or 0:.4f} acc {p.acc_avg or 0:.2f} gate {p.gate:.3f} "
            f"{p.tokens_per_s:,.0f} tok/s mem {_mem():.1f} GiB"
        )

    run_training(cfg, on_progress=progress, on_notice=log)


EVALS = "pk_short,qa1,chat,ppl,pk_128k,pk_1m,zeroshot,qa2,qa1_128k"  # the default order
EVAL_NAMES = {*EVALS.split(","), "qa1_4k"}


def product_segment_len() -> int:
    """The segment length the product reads with, from the shipped adapter's metadata (a trained, unpackaged
    adapter records its training length instead, so the benchmarks here name the product's explicitly)."""
    from infinicli.loading import DEFAULT_ADAPTER, read_adapter

    return int(read_adapter(DEFAULT_ADAPTER)[1]["infini_config"]["segment_len"])


def evaluate(out: Path, adapter: str, deadline: float, evals: list[str], segment_len: int) -> None:
    from infinicli.bench import babilong, chat, passkey, ppl
    from infinicli.session import Options, Session

    results: dict = {}
    rate = [0.0, 0.0]  # tokens read, seconds

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    def engine(name: str):
        return Session(Options(adapter=name, device=DEVICE, seed=0, segment_len=segment_len)).engine

    eng = engine(adapter)
    base = None

    def bench(key: str, tokens: int, fn) -> None:
        left = deadline - (time.perf_counter() - T0)
        speed = rate[0] / rate[1] if rate[1] > 0 else 30000.0
        if tokens / speed > left - 5:
            log(f"skip {key}: needs ~{tokens / speed:.0f} s, {left:.0f} s left")
            return
        t = time.perf_counter()
        try:
            r = fn()
        except Exception:
            log(f"{key} failed:\n{traceback.format_exc()}")
            return
        dt = time.perf_counter() - t
        rate[0] += tokens
        rate[1] += dt
        r.pop("results", None) if key.startswith("ppl") else None
        results[key] = r
        save()
        log(f"{key} ({dt:.1f} s):\n{r['table_text']}")

    def pk(lengths: list[int], samples: int, e=None):
        s = passkey.Settings(lengths=lengths, depths=[0, 25, 50, 75, 100], samples=samples, seed=0)
        return lambda: passkey.run(e or eng, s, None)

    def bl(task: str, lengths: list[int], samples: int):
        s = babilong.Settings(tasks=[task], lengths=lengths, samples=samples, seed=0)
        return lambda: babilong.run(eng, s, None)

    def base_engine():
        nonlocal base
        base = base or engine("none")
        return base

    table = {
        "pk_short": ("passkey_2k_8k_32k", 5 * 2 * 42 * K, pk([2 * K, 8 * K, 32 * K], 2)),
        "qa1": ("babilong_qa1_4k_32k", 20 * 36 * K, bl("qa1", [4 * K, 32 * K], 20)),
        "qa1_4k": ("babilong_qa1_4k", 20 * 4 * K, bl("qa1", [4 * K], 20)),
        "chat": (
            "chat",
            10 * K,
            lambda: chat.run(eng, base_engine(), chat.Settings(compare_tokens=24), None),
        ),
        "ppl": ("ppl_32k", 3 * 32 * K, lambda: ppl.run(eng, ppl.Settings(tokens=32 * K), None)),
        "pk_128k": ("passkey_128k", 5 * 128 * K, pk([128 * K], 1)),
        "pk_1m": ("passkey_1m", 5 * 1024 * K, pk([1024 * K], 1)),
        "zeroshot": (
            "zeroshot_passkey_2k_8k_32k",
            5 * 42 * K,
            lambda: pk([2 * K, 8 * K, 32 * K], 1, base_engine())(),
        ),
        "qa2": ("babilong_qa2_4k_32k", 10 * 36 * K, bl("qa2", [4 * K, 32 * K], 10)),
        "qa1_128k": ("babilong_qa1_128k", 5 * 128 * K, bl("qa1", [128 * K], 5)),
    }
    assert table.keys() == EVAL_NAMES
    for name in evals:
        key, tokens, fn = table[name]
        bench(key, tokens, fn)
    log("evaluation done")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", type=float, default=330)
    ap.add_argument("--deadline", type=float, default=560)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--config", default="infinicli/train/h100.toml")
    ap.add_argument("--train-stop", type=float, default=float("inf"))
    ap.add_argument("--adapter", default=None, help="benchmark this adapter; no training")
    ap.add_argument("--evals", default=EVALS)
    ap.add_argument(
        "--segment-len",
        type=int,
        default=None,
        help="default: the shipped adapter's (the product's reading length)",
    )
    a = ap.parse_args()
    unknown = set(a.evals.split(",")) - EVAL_NAMES
    if unknown:  # before the training, not after it
        ap.error(f"--evals: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(EVAL_NAMES))})")
    a.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    log(f"torch {torch.__version__} on {gpu}, device {DEVICE}")
    if not (a.skip_train or a.adapter):
        try:
            train(a.out, a.config, a.budget, a.train_stop, a.sets)
        except BaseException:
            log(f"training stopped:\n{traceback.format_exc()}")
    adapter = Path(a.adapter) if a.adapter else a.out / "run" / "adapter.safetensors"
    if adapter.is_file():
        evaluate(a.out, str(adapter), a.deadline, a.evals.split(","), a.segment_len or product_segment_len())
    else:
        log("no adapter was written: nothing to evaluate")


if __name__ == "__main__":
    main()
