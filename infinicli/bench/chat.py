"""Chat kept: with an empty memory, does the model with its adapter still answer like the base model?

The trained adapter (LoRA merged into q/k/v/o, gates) must not damage the model's ordinary chat ability.
Each of a fixed set of short general prompts is answered greedily, with an empty memory, by the model with
the adapter and by the base model (no adapter: with an empty memory that is exactly the original network).
A prompt *agrees* when both produce the same first `compare_tokens` tokens (or the same whole answer when
it is shorter). The common-prefix length is reported as well, so near misses are visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from infinicli.bench.common import Log, Timer, format_table, machine_info, model_info, pct, stop_ids

PROMPTS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What colour is the sky on a clear day?",
    "Name three fruits.",
    "What is 12 plus 7?",
    "Who wrote Romeo and Juliet?",
    "Translate 'thank you' into Spanish.",
    "What is the boiling point of water in Celsius?",
    "Give me a synonym for 'happy'.",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Write one sentence about the sea.",
    "What is the opposite of 'cold'?",
    "Which animal is known as the king of the jungle?",
    "What language is spoken in Brazil?",
    "What is H2O?",
    "Suggest a name for a pet cat.",
    "What season comes after winter?",
    "How many minutes are in an hour?",
    "What is the freezing point of water in Fahrenheit?",
    "Name a famous painting by Leonardo da Vinci.",
    "What gas do plants absorb from the air?",
    "Say hello in French.",
]


@dataclass
class Settings:
    compare_tokens: int = 24
    prompts: int = len(PROMPTS)


def greedy_reply(engine: Any, prompt: str, max_new_tokens: int) -> list[int]:
    """Token ids of the greedy answer to one chat turn, memory empty."""
    from infinicli.generate import generate

    tok = engine.tok
    ids = tok.encode_with_specials(tok.chat_prompt([{"role": "user", "content": prompt}]))
    model = engine.model
    return list(
        generate(model, model.empty_memory(1), ids, max_new_tokens=max_new_tokens, stop_ids=stop_ids(engine))
    )


def run(engine: Any, base: Any, settings: Settings, log: Log | None = None) -> dict:
    """Compare `engine` (the adapter under test) with `base` (no adapter) on the fixed prompts."""
    log = log or (lambda msg: None)
    timer = Timer()
    n = settings.compare_tokens
    results = []
    with timer("all"):
        for prompt in PROMPTS[: settings.prompts]:
            t0 = time.perf_counter()
            a = greedy_reply(engine, prompt, n)
            b = greedy_reply(base, prompt, n)
            common = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
            )
            agree = a == b
            results.append(
                {
                    "prompt": prompt,
                    "adapter": engine.tok.decode(a),
                    "base": base.tok.decode(b),
                    "agree": agree,
                    "common_prefix_tokens": common,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "_longest": max(len(a), len(b)),
                }
            )
            log(
                f"chat {'same ' if agree else 'DIFF '} {prompt!r}: "
                f"{results[-1]['adapter']!r} | {results[-1]['base']!r}"
            )
    ok = sum(r["agree"] for r in results)
    longest = sum(r.pop("_longest") for r in results)
    rows = [
        [
            len(results),
            pct(ok, len(results)),
            f"{sum(r['common_prefix_tokens'] for r in results)} / {longest}",
            f"{timer.total:.1f}",
        ]
    ]
    return {
        "benchmark": "chat",
        "settings": {**settings.__dict__, "decoding": "greedy", "memory": "empty"},
        "model": model_info(engine),
        "base_model": model_info(base),
        "machine": machine_info(engine),
        "table": {"prompts": len(results), "agree": ok, "agreement": 100.0 * ok / max(1, len(results))},
        "table_text": format_table(["prompts", "same answer %", "common-prefix tokens", "wall s"], rows),
        "wall_seconds": round(timer.total, 1),
        "results": results,
    }
