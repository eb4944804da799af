"""Token generation inside the final segment: a generator of token ids, reading (not writing) the memory.

The final segment (unfinished tail of the document + the prompt) is prefilled once with a KV cache, then
tokens are sampled one at a time; the compressive memory is only read (eq. 3), so the same memory can answer
any number of questions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from infinicli.model import InfiniLlama, KVCache, Memory


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    """Greedy when temperature <= 0, else temperature + nucleus sampling.  logits: [V]."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
        return int(idx[choice])
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.inference_mode()
def generate(
    model: InfiniLlama,
    memory: Memory,
    prompt: Sequence[int],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 0.95,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    repetition_penalty: float = 1.0,
) -> Iterator[int]:
    """Yield generated token ids (stop tokens are not yielded)."""
    device = model.model.embed_tokens.weight.device
    gen = None
    if temperature > 0:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed if seed is not None else torch.seed())
    kv = KVCache()
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    logits, _ = model.forward_segment(ids, memory, write=False, logits="last", kv=kv)
    produced: list[int] = []
    for _ in range(max_new_tokens):
        last = logits[0, -1].float().cpu()
        if repetition_penalty != 1.0 and produced:
            seen = torch.tensor(sorted(set(produced)))
            vals = last[seen]
            last[seen] = torch.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
        nxt = sample_next(last, temperature, top_p, gen)
        if nxt in stop_ids:
            return
        produced.append(nxt)
        yield nxt
        ids = torch.tensor([[nxt]], dtype=torch.long, device=device)
        logits, _ = model.forward_segment(ids, memory, write=False, logits="last", kv=kv)
