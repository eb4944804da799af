"""Can the trained layers fit the read loss at all? Only loss.read, on a few fixed bAbI samples, N steps.

Sessions 30-32 saw the read loss (loss.read against the facts: −log of the share of layer 23's memory read
at the answer that falls on the asked person's moves rather than the other people's) follow the same path
whatever its weight. This script asks a simpler question: with every other loss term off, and the same few
samples seen again and again, how fast does it fall? If it falls fast, the training mixture is what holds it
back; if it falls slowly even here, the trained parameters have little leverage on it.

The model, optimizer (its groups and learning rates), samples and loss are the training run's own (a recipe
plus overrides, as `infini train` takes them); the loss is printed as the mean over the fixed samples, before
the first step and every `--every` steps.

    python scripts/read_fit_probe.py --adapter runs/s32/s19.safetensors --steps 40
    python scripts/read_fit_probe.py --adapter runs/s32/s19.safetensors --steps 20 --lr-mult 10
    python scripts/read_fit_probe.py --adapter runs/s32/s19.safetensors --steps 20 --from-layer 12
    python scripts/read_fit_probe.py --adapter runs/s32/s19.safetensors --steps 20 --read-layers 26
    python scripts/read_fit_probe.py --adapter infinicli/adapters/smollm2-135m.safetensors --steps 20 \
        --from-layer 18 --local-layers 18,19,20,21,22      # plus LoRA on those layers' local path
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from infinicli.train.config import load_config
from infinicli.train.data import collate
from infinicli.train.loop import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="the adapter to start from (model.init_adapter)")
    ap.add_argument("--recipe", default="infinicli/train/shipped_stage12.toml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr-mult", type=float, default=1.0, help="every group's learning rate times this")
    ap.add_argument("--from-layer", type=int, default=23, help="model.train_from_layer")
    ap.add_argument("--read-layers", default="23", help="loss.read_layers, comma-separated")
    ap.add_argument("--local-layers", default="", help="model.lora_local_layers, comma-separated")
    ap.add_argument("--samples", type=int, default=4, help="fixed bAbI samples, one per step in turn")
    ap.add_argument("--segments", type=int, default=5, help="segments in memory per sample")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    out = tempfile.mkdtemp(prefix="read_fit_")
    overrides = [
        f"model.init_adapter={a.adapter}",
        "model.init_average_with=",
        f"model.train_from_layer={a.from_layer}",
        "loss.answer=0",
        "loss.lm=0",
        "loss.distill=0",
        "loss.read=1.0",
        f"loss.read_layers=[{a.read_layers}]",
        f"model.lora_local_layers=[{a.local_layers}]",
        f"run.out={out}",
        f"run.threads={a.threads}",
    ]
    trainer = Trainer(load_config(a.recipe, overrides))
    trainer.setup()
    for g in trainer.opt.param_groups:
        g["lr"] *= a.lr_mult
    rng = random.Random(a.seed)
    batches = [collate([trainer.factory.sample(rng, a.segments, kind="babi")]) for _ in range(a.samples)]
    params = [p for _, p in trainer.named]

    def mean_read() -> float:
        with torch.no_grad():
            vals = []
            for b in batches:
                _, st = trainer.objective(b, None)
                vals.append((st["read_sum"] / st["read_n"]).item())
        return sum(vals) / len(vals)

    print(f"step 0: read loss {mean_read():.4f} (mean over {a.samples} fixed samples)", flush=True)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        trainer.opt.zero_grad()
        loss, _ = trainer.objective(batches[(step - 1) % len(batches)], None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, trainer.cfg.optim.grad_clip)
        trainer.opt.step()
        if step % a.every == 0 or step == a.steps:
            print(f"step {step}: read loss {mean_read():.4f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
