"""Device smoke test (run on the lent GPU before the real training job): every CUDA code path once.

1. tiny random model: `infini train` on cuda (time budget), then the engine and the passkey, BABILong, chat
   and perplexity benches on cuda with the trained adapter;
2. real-shape random weights (SmolLM2-135M's config, the real tokenizer): the H100 recipe for a short budget,
   to see the step time, the step count the budget gives and the GPU memory.
Usage: INFINI_CORPUS=.gpu/corpus python scripts/device/smoke.py SMALL_MODEL_FILES_DIR [tiny|real|both]
SMOKE_CONFIG picks the recipe of the tiny run (default infinicli/train/h100.toml), SMOKE_TINY_SETS adds
section.key=value overrides to it (e.g. model.train_from_layer=1 for a recipe written for 30 layers).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

DEVICE = os.environ.get("SMOKE_DEVICE", "cuda")  # cpu: check the script itself here, without a GPU
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tiny() -> None:
    from conftest import make_tiny_model_dir

    from infinicli.bench import babilong, chat, passkey, ppl
    from infinicli.session import Options, Session
    from infinicli.train.config import load_config
    from infinicli.train.loop import train

    d = make_tiny_model_dir(Path("/tmp/tiny-model"))
    out = Path("/tmp/tiny-run")
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(
        os.environ.get("SMOKE_CONFIG", "infinicli/train/h100.toml"),
        [f"model.model={d}", "model.init_adapter=none", "model.segment_len=128", "curriculum.start_min=2",
         "curriculum.end_min=2",
         "curriculum.end_max=4", f"run.out={out}", "run.time_budget_s=4",
         "optim.batch_size=2", "loss.distill_pool=3", "loss.distill_response_tokens=4",
         "loss.distill_max_tokens=48", "run.checkpoint_every=2", "run.log_every=1", f"run.device={DEVICE}",
         *os.environ.get("SMOKE_TINY_SETS", "").split()],
    )  # fmt: skip
    adapter = train(
        cfg, on_progress=lambda p: log(f"tiny step {p.step}/{p.steps} loss {p.loss:.3f}"), on_notice=log
    )
    log(f"tiny adapter {adapter}")
    eng = Session(Options(model=str(d), adapter=str(adapter), device=DEVICE)).engine
    base = Session(Options(model=str(d), adapter="none", device=DEVICE)).engine
    r = passkey.run(eng, passkey.Settings(lengths=[300], depths=[0, 100], samples=1, max_new_tokens=4), log)
    log(r["table_text"])
    r = babilong.run(eng, babilong.Settings(tasks=["qa1"], lengths=[600], samples=2, max_new_tokens=3), log)
    log(r["table_text"])
    r = chat.run(eng, base, chat.Settings(compare_tokens=4, prompts=3), log)
    log(r["table_text"])
    r = ppl.run(eng, ppl.Settings(tokens=400), log)
    log(r["table_text"])


def real_shape(small: Path) -> None:
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from infinicli.train.config import load_config
    from infinicli.train.loop import train

    d = Path("/tmp/random-135m")
    d.mkdir(exist_ok=True)
    for p in small.iterdir():
        if p.is_file():
            shutil.copy(p, d / p.name)
    (d / "infini.json").unlink(missing_ok=True)
    conf = LlamaConfig(**{k: v for k, v in json.loads((small / "config.json").read_text()).items()})
    torch.manual_seed(0)
    m = LlamaForCausalLM(conf)
    sd = {k: v.contiguous() for k, v in m.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    del m, sd
    out = Path("/tmp/real-shape-run")
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(
        "infinicli/train/h100.toml",
        [f"model.model={d}", f"run.out={out}", "run.time_budget_s=25", "loss.distill_pool=4",
         "loss.distill_response_tokens=8", "run.checkpoint_every=0", "run.log_every=1",
         f"run.device={DEVICE}", *os.environ.get("SMOKE_REAL_SETS", "").split()],
    )  # fmt: skip
    t0 = time.perf_counter()
    train(
        cfg,
        on_progress=lambda p: log(
            f"real-shape step {p.step}/{p.steps} segs {p.segments:.1f} loss {p.loss:.2f} "
            f"{p.tokens_per_s:,.0f} tok/s mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        ),
        on_notice=log,
    )
    log(f"real-shape run {time.perf_counter() - t0:.1f} s")
    from infinicli.session import Options, Session

    eng = Session(Options(model=str(d), adapter=str(out / "adapter.safetensors"), device=DEVICE)).engine
    ids = torch.randint(0, 49000, (int(os.environ.get("SMOKE_READ_TOKENS", 65536)),)).tolist()
    from infinicli.bench.common import read_tokens

    read_tokens(eng, ids[:4096])  # warm-up
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    read_tokens(eng, ids)
    sync()
    dt = time.perf_counter() - t
    log(f"engine read of {len(ids):,} tokens on {DEVICE}: {dt:.2f} s = {len(ids) / dt:,.0f} tok/s")


if __name__ == "__main__":
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    log(f"torch {torch.__version__}, {gpu}, smoke device {DEVICE}")
    which = sys.argv[2] if len(sys.argv) > 2 else "both"
    if which in ("both", "tiny"):
        tiny()
    if which in ("both", "real"):
        real_shape(Path(sys.argv[1]))
    log("SMOKE OK")
