"""Training: samples in the product's layout, gradients through memory, checkpointing, resume, DDP, CLI.

All on the tiny random-weight model (fp32) with a tiny corpus written here, so nothing depends on
../shared/corpus or the real model.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infinicli.train.config import ConfigError, TrainConfig, load_config
from infinicli.train.data import IGNORE, NEEDLES, SampleFactory, collate, parse_babi

S = 96
BOOK = (
    "Once upon a time a miller lived by the river. He had three sons and a grey cat. "
    "Every morning the eldest son carried flour to the town, and every evening he came back tired. "
    "The second son loved the forest and knew every bird by its song. The youngest son said little.\n"
) * 30
QA = [("Where is Mary?", "bathroom"), ("Where is Daniel?", "hallway")]
BABI = (
    "1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"
    "4 Daniel went back to the hallway.\n5 Sandra moved to the garden.\n6 Where is Daniel? |hallway|4\n"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine (OpenMP waits on a loaded CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "books").mkdir()
    (root / "books" / "miller.txt").write_text(BOOK)
    (root / "babi").mkdir()
    (root / "babi" / "qa1_single-supporting-fact_train.txt").write_text(BABI)
    return root


def tiny_config(model_dir: Path, corpus: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(
        None,
        [
            f"model.model={model_dir}",
            f"model.segment_len={S}",
            f"data.corpus={corpus}",
            'data.books=["books/miller.txt"]',
            "data.babi_tasks=[1]",
            f"run.out={out}",
            "run.bf16=false",
            "run.steps=4",
            "run.checkpoint_every=0",
            "curriculum.start_min=2",
            "curriculum.start_max=3",
            "curriculum.end_max=3",
            "loss.distill_response_tokens=3",
            "loss.distill_pool=3",
            "loss.distill_max_tokens=48",
            "optim.warmup_steps=0",
            "optim.schedule=constant",
            "run.threads=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from infinicli.tokenizer import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def factory(tok, corpus) -> SampleFactory:
    cfg = load_config(
        None, [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.babi_tasks=[1]"]
    )
    return SampleFactory.from_corpus(tok, S, cfg.data)


@pytest.fixture(scope="module")
def trained_parts(tiny_model_dir, corpus, tmp_path_factory):
    """(config, model, objective) of the tiny model with LoRA, fp32, LoRA B made non-zero."""
    from infinicli.train.loop import Objective, build_training_model, trainable_parameters

    cfg = tiny_config(tiny_model_dir, corpus, tmp_path_factory.mktemp("run"))
    torch.manual_seed(0)
    lm, _, _ = build_training_model(cfg, torch.device("cpu"))
    model = lm.model
    trainable_parameters(model, "lora")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.normal_(0, 0.02)
    return cfg, model, Objective(model, cfg)


# -- config -------------------------------------------------------------------------------------------


def test_bf16_only_where_the_device_has_it(monkeypatch):
    """run.bf16 on a CPU without native bf16 (AVX2 only) trains in fp32: emulated bf16 is slower there."""
    from infinicli import loading
    from infinicli.train.loop import use_bf16

    cfg = load_config(None, [])
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    assert cfg.run.bf16 and not use_bf16(cfg, cpu) and use_bf16(cfg, cuda)
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    assert use_bf16(cfg, cpu)
    cfg.run.bf16 = False
    assert not use_bf16(cfg, cpu) and not use_bf16(cfg, cuda)


def test_default_recipe_loads_and_overrides_apply():
    cfg = load_config(
        None, ["optim.lr=1e-3", "run.bf16=false", "model.lora_targets=['q_proj']", "run.out=a b"]
    )
    assert cfg.optim.lr == 1e-3 and cfg.run.bf16 is False and cfg.model.lora_targets == ["q_proj"]
    assert cfg.run.out == "a b" and cfg.optim.gate_lr == 0.1 and cfg.model.gate_init == -1.0
    with pytest.raises(ConfigError):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError):
        load_config(None, ["run.steps=many"])
    with pytest.raises(ConfigError, match="held out"):
        load_config(None, ['data.books=["books/anna_karenina.txt"]'])


def test_parse_babi_both_separators():
    qs = parse_babi(BABI)
    assert [(q.question, q.answer) for q in qs] == QA
    assert qs[0].facts == ["Mary moved to the bathroom.", "John went to the hallway."]
    assert qs[1].facts[0] == "Daniel went back to the hallway."
    story = parse_babi(BABI, "story")  # every fact before the question, as the benchmark asks
    assert [(q.question, q.answer) for q in story] == QA
    assert story[1].facts == [
        "Mary moved to the bathroom.",
        "John went to the hallway.",
        "Daniel went back to the hallway.",
        "Sandra moved to the garden.",
    ]


def test_babi_samples_can_hide_the_whole_story_and_ask_in_the_benchmarks_form(tok, corpus):
    from infinicli.babi import question_text

    def factory_with(*sets: str) -> SampleFactory:
        base = [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.babi_tasks=[1]"]
        return SampleFactory.from_corpus(tok, S, load_config(None, [*base, *sets]).data)

    plain = factory_with()
    story = factory_with("data.babi_context=story", "data.babi_form=1.0")
    assert [len(q.facts) for q in plain.babi] == [2, 2] and [len(q.facts) for q in story.babi] == [2, 4]
    rng = random.Random(0)
    asked = {story.sample(rng, 3, "babi").question for _ in range(6)}
    assert asked <= {question_text(q) for q, _ in QA} and len(asked) == 2
    assert {plain.sample(rng, 3, "babi").question for _ in range(6)} <= {q for q, _ in QA}
    for bad in ("data.babi_context=all", "data.babi_form=1.5"):
        with pytest.raises(ConfigError):
            load_config(None, [bad])


def test_qa1_samples_can_also_ask_where_the_storys_other_people_are(tok, corpus):
    """data.babi_questions > 1: further final segments after the same document, one per other person of the
    story, each answered with that person's last room; the default asks only the story's own question."""
    from infinicli.babi import whereabouts

    assert whereabouts(
        ["Mary moved to the bathroom.", "John went to the hallway.", "Mary went back to the office."]
    ) == {
        "Mary": "office",
        "John": "hallway",
    }
    assert whereabouts(["Mary moved to the bathroom.", "Mary got the apple there."]) is None  # not QA1
    base = [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.babi_tasks=[1]"]
    base += ["data.babi_context=story"]
    many = SampleFactory.from_corpus(tok, S, load_config(None, [*base, "data.babi_questions=4"]).data)
    one = SampleFactory.from_corpus(tok, S, load_config(None, base).data)
    rng = random.Random(1)
    seen = set()
    for _ in range(8):
        assert one.sample(rng, 4, "babi").more == []
        s = many.sample(rng, 4, "babi")  # room for all four facts (tiny tokenizer: long token strings)
        where = {"Where is Mary?": {"John": "hallway"}}.get(
            s.question, {"Mary": "bathroom", "John": "hallway", "Sandra": "garden"}
        )
        assert len(s.more) == len(where)
        head = s.final[: len(s.final) - len(many.answer_ids(s.answer)) + 1]
        tail = head[: len(head) - len(many.prompt_ids(s.question))]  # chat opener + the document's tail
        for final, labels in s.more:
            assert final[: len(tail)] == tail and len(labels) == len(final)
            asked = tok.decode(final[len(tail) :])
            person = next(p for p in where if f"Where is {p}?" in asked)
            answer = [x for x in labels if x != IGNORE]
            assert answer == many.answer_ids(where.pop(person))  # the room, then <|im_end|>
            assert final[-len(answer) + 1 :] == answer[:-1]  # teacher forcing
            seen.add(person)
        assert not where  # every other person asked once
    assert seen == {"Mary", "John", "Sandra"}
    with pytest.raises(ConfigError):
        load_config(None, ["data.babi_questions=0"])


def test_further_questions_read_their_own_samples_memory(trained_parts, tok, corpus):
    """A batch whose samples carry further questions gives each question the same loss as a sample of its
    own with that question: every final row reads the memory of the sample it belongs to."""
    import copy

    cfg, model, objective = trained_parts
    sets = [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.babi_tasks=[1]"]
    sets += ["data.babi_context=story", "data.babi_questions=4"]
    many = SampleFactory.from_corpus(tok, S, load_config(None, sets).data)
    rng = random.Random(4)
    samples = []
    while len(samples) < 2:
        s = many.sample(rng, 2, "babi")
        if s.more and (not samples or s.text != samples[0].text):
            samples.append(s)
    batch = collate(samples)
    assert batch.final.shape[0] == 2 + sum(len(s.more) for s in samples)
    assert batch.owner.tolist() == [0, 1] + [i for i, s in enumerate(samples) for _ in s.more]
    singles = []
    for s in samples:
        for (final, labels), spans in zip(
            [(s.final, s.labels), *s.more], [s.spans, *s.more_spans], strict=True
        ):
            one = copy.copy(s)
            one.final, one.labels, one.more, one.spans, one.more_spans = final, labels, [], spans, []
            singles.append(one)
    with torch.no_grad():
        _, together = objective(batch)
        apart = [objective(collate([one]))[1] for one in singles]
    for key in ("ans_sum", "ans_cnt", "tok_right", "qa"):
        torch.testing.assert_close(together[key], sum(a[key] for a in apart), rtol=1e-5, atol=1e-5)
    assert together["samples"] == 2 and together["qa"] == len(singles)


def test_samples_name_the_memory_tokens_of_the_sentences_that_answer_them(tok, corpus):
    """Sample.spans: a pass key's asked needle; a QA1 question's moves of the asked person (and each further
    question's person); the batch's support mask is 1 exactly there, per final row."""
    sets = [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.babi_tasks=[1]"]
    sets += ["data.babi_context=story", "data.babi_questions=4", "data.local=0", "data.second_needle=1"]
    f = SampleFactory.from_corpus(tok, S, load_config(None, sets).data)
    rng = random.Random(2)

    def said(s, spans) -> str:
        stream = [t for seg in s.segments for t in seg]
        return " | ".join(tok.decode(stream[a:b]).strip() for a, b in spans)

    for _ in range(3):
        s = f.sample(rng, 3, "passkey")
        assert len(s.inserts) == 2 and len(s.spans) == 1  # two needles, one asked
        asked = said(s, s.spans)
        assert asked in s.inserts and s.answer in asked
        assert said(s, s.fact_spans) == " | ".join(s.inserts)  # the facts: both needles, in order
    moves = {
        "Mary": "Mary moved to the bathroom.",
        "John": "John went to the hallway.",
        "Daniel": "Daniel went back to the hallway.",
        "Sandra": "Sandra moved to the garden.",
    }
    people = set()
    for _ in range(30):
        if people == set(moves):
            break
        s = f.sample(rng, 4, "babi")  # room for all four facts (tiny tokenizer: long token strings)
        questions = [s.question] + [tok.decode(final).rsplit("Where is ", 1)[1] for final, _ in s.more]
        assert len(s.more_spans) == len(s.more)
        for q, spans in zip(questions, [s.spans, *s.more_spans], strict=True):
            person = next(p for p in moves if f"Where is {p}?" in "Where is " + q or f"{p}?" in q)
            assert said(s, spans) == moves[person]  # one move each in this tiny corpus
            people.add(person)
        b = collate([s])
        assert b.support.shape == b.facts.shape == (1 + len(s.more), 4, S)
        for r, spans in enumerate([s.spans, *s.more_spans]):
            assert b.support[r].sum() == sum(e - a for a, e in spans)
        # every row's facts: all of the story's moves in memory, whoever is asked
        assert said(s, s.fact_spans) == " | ".join(s.inserts)
        assert (b.facts == b.facts[:1]).all() and (b.facts >= b.support).all()
        assert b.facts[0].sum() == sum(e - a for a, e in s.fact_spans)
    assert people == set(moves)
    assert collate([f.sample(rng, 2, "lm")]).support is None


def _mask(spans: list[tuple[int, int]], n: int) -> torch.Tensor:
    on = torch.zeros(n, dtype=torch.bool)
    for a, b in spans:
        on[a:b] = True
    return on


def _read_weights(model, layer: int, sample) -> tuple[torch.Tensor, torch.Tensor]:
    """What a read layer's memory read puts on each written token at the sample's answer position, measured
    by running the model segment by segment (as scripts/qa1_probe.py does): (σ(q)·σ(k_t) [H, T_mem],
    σ(q)·z + eps [H])."""
    from infinicli import memory as mem

    att = model.model.layers[layer].self_attn
    seen = []
    hook = att.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        memory = model.empty_memory(1)
        for seg in sample.segments:
            _, memory = model.forward_segment(torch.tensor([seg]), memory, logits=None)
        keys = torch.cat([mem.sigma(att._mem_keys(x, att.k_proj(x)).float()) for x in seen], dim=2)
        seen.clear()
        model.forward_segment(torch.tensor([sample.final]), memory, write=False)
        pos = next(i for i, y in enumerate(sample.labels) if y != IGNORE)
        xq = seen[0][:, pos : pos + 1]
        sq = mem.sigma(att._mem_queries(xq, att.q_proj(xq)).float())[0, :, 0]  # [H, d]
    hook.remove()
    G = sq.shape[0] // keys.shape[1]
    w = torch.einsum("hd,htd->ht", sq, keys[0].repeat_interleave(G, 0))  # [H, T_mem]
    z = memory.z[layer, 0].repeat_interleave(G, 0)
    return w, (sq * z).sum(-1) + 1e-6


def test_the_read_loss_is_the_share_of_the_memory_read_on_the_answering_sentence(trained_parts, factory):
    """loss.read adds −log(mean over heads of σ(q)·Σ_support σ(k_t) / σ(q)·z) at the answer position: equal
    to that share measured by running the model segment by segment (as scripts/qa1_probe.py does), the
    same with and without activation checkpointing, and its gradient reaches the read layer's key and query
    LoRA and the layers below it."""
    import dataclasses

    from infinicli.train.loop import Objective, read_loss

    cfg, model, _ = trained_parts
    layer = 1
    read_cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, read=1.0, read_layers=[layer]))
    objective = Objective(model, read_cfg)
    sample = factory.sample(random.Random(9), 3, "passkey")
    assert sample.spans
    batch = collate([sample])
    with torch.no_grad():
        loss, stats = objective(batch, grad_checkpoint=False)
        plain, _ = Objective(model, cfg)(batch, grad_checkpoint=False)
    assert stats["read_n"] == 1
    torch.testing.assert_close(loss - plain, stats["read_sum"], rtol=1e-5, atol=1e-6)

    # the share, measured directly: every memory key of the layer, the query at the answer position
    w, denominator = _read_weights(model, layer, sample)
    share = w[:, _mask(sample.spans, w.shape[1])].sum(-1) / denominator
    assert 0 < share.mean() < 1
    torch.testing.assert_close(stats["read_sum"], -share.mean().log(), rtol=1e-4, atol=1e-5)

    # with and without checkpointing; the gradient of the read loss alone
    read_only = dataclasses.replace(read_cfg, loss=dataclasses.replace(read_cfg.loss, answer=0.0, lm=0.0))
    l1, g1 = _grads(model, Objective(model, read_only), batch, grad_checkpoint=True)
    l2, g2 = _grads(model, Objective(model, read_only), batch, grad_checkpoint=False)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-6)
    for k in g2:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=1e-7)
    for name in (
        f"model.layers.{layer}.self_attn.k_proj.lora_B",
        f"model.layers.{layer}.self_attn.q_proj.lora_B",
    ):
        assert g2[name].abs().sum() > 0
    assert g2["model.layers.0.self_attn.v_proj.lora_B"].abs().sum() > 0  # through the read layer's input
    assert (
        f"model.layers.{layer}.self_attn.o_proj.lora_B" not in g2
        or g2[f"model.layers.{layer}.self_attn.o_proj.lora_B"].abs().sum() == 0
    )  # the share does not depend on what the layer outputs

    # read_loss on hand-made tensors: a head that reads only the support has share 1, loss 0
    sq = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # [1 layer, 1 row, 2 heads, d 2]
    zt = torch.tensor([[[[2.0, 0.0]]]])  # support keys only along the first axis, one KV head
    z = torch.tensor([[[[2.0, 2.0]]]])
    total, n = read_loss(sq, zt, z)
    torch.testing.assert_close(total, -torch.tensor(0.5).log(), rtol=1e-5, atol=1e-5)  # shares 1 and 0
    assert n == 1 and read_loss(sq, torch.zeros_like(zt), z)[1] == 0  # a row without support: no loss
    best, _ = read_loss(sq, zt, z, heads="max")  # the head that reads only the support: share 1, loss 0
    torch.testing.assert_close(best, torch.tensor(0.0), rtol=1e-5, atol=1e-5)
    sq_g = sq.clone().requires_grad_()
    read_loss(sq_g, zt, z * 2, heads="max")[0].backward()  # shares 0.5 and 0: only the first head learns
    assert sq_g.grad[..., 0, :].abs().sum() > 0 and sq_g.grad[..., 1, :].abs().sum() == 0
    with pytest.raises(ConfigError, match="read_layers"):
        Objective(
            model, dataclasses.replace(read_cfg, loss=dataclasses.replace(read_cfg.loss, read_layers=[7]))
        )
    with pytest.raises(ConfigError, match="loss.read"):
        load_config(None, ["loss.read=-1"])
    with pytest.raises(ConfigError, match="read_kinds"):
        load_config(None, ["loss.read_kinds=['lm']"])
    with pytest.raises(ConfigError, match="read_heads"):
        load_config(None, ["loss.read_heads='sum'"])


def test_the_read_loss_supervises_only_the_sample_kinds_it_names(trained_parts, factory):
    """loss.read_kinds: a pass-key sample adds no read loss when only bAbI questions are supervised, and in a
    batch of both kinds the bAbI row's read loss is the one it has alone."""
    import dataclasses

    from infinicli.train.loop import Objective

    cfg, model, _ = trained_parts

    def objective(kinds: list[str]) -> Objective:
        lo = dataclasses.replace(cfg.loss, read=1.0, read_layers=[1], read_kinds=kinds)
        return Objective(model, dataclasses.replace(cfg, loss=lo))

    rng = random.Random(5)
    passkey, babi = factory.sample(rng, 3, "passkey"), factory.sample(rng, 3, "babi")
    assert passkey.spans and babi.spans
    with torch.no_grad():
        _, both = objective(["passkey", "babi"])(collate([passkey, babi]), grad_checkpoint=False)
        _, only = objective(["babi"])(collate([passkey, babi]), grad_checkpoint=False)
        _, alone = objective(["babi"])(collate([babi]), grad_checkpoint=False)
        _, none = objective(["babi"])(collate([passkey]), grad_checkpoint=False)
    assert both["read_n"] == 2 and only["read_n"] == 1 and none["read_n"] == 0
    torch.testing.assert_close(only["read_sum"], alone["read_sum"], rtol=1e-4, atol=1e-5)


def test_the_read_loss_against_the_facts_is_the_asked_needles_share_of_the_needles_read(
    trained_parts, tok, corpus
):
    """loss.read_against = "facts": −log of σ(q)·Σ_answer σ(k_t) / σ(q)·Σ_facts σ(k_t), the share of the read
    on all hidden sentences that falls on the answering one: measured directly, it matches; it is below the
    share of the whole read's loss (the haystack is left out), 0 when the asked needle is the only one, and
    its gradient reaches the read layer's key projection."""
    import dataclasses

    from infinicli.train.loop import Objective

    cfg, model, _ = trained_parts
    layer = 1
    lo = dataclasses.replace(cfg.loss, read=1.0, read_layers=[layer], read_against="facts")
    facts_cfg = dataclasses.replace(cfg, loss=lo)
    memory_cfg = dataclasses.replace(cfg, loss=dataclasses.replace(lo, read_against="memory"))
    sets = [f"data.corpus={corpus}", 'data.books=["books/miller.txt"]', "data.second_needle=1"]
    sets.append("data.local=0")
    f = SampleFactory.from_corpus(tok, S, load_config(None, sets).data)
    rng = random.Random(4)
    sample = next(s for s in (f.sample(rng, 3, "passkey") for _ in range(20)) if len(s.fact_spans) == 2)
    assert set(sample.spans) < set(sample.fact_spans)
    batch = collate([sample])
    with torch.no_grad():
        _, facts = Objective(model, facts_cfg)(batch, grad_checkpoint=False)
        _, whole = Objective(model, memory_cfg)(batch, grad_checkpoint=False)
    w, _ = _read_weights(model, layer, sample)
    on, hidden = _mask(sample.spans, w.shape[1]), _mask(sample.fact_spans, w.shape[1])
    share = w[:, on].sum(-1) / (w[:, hidden].sum(-1) + 1e-6)
    assert 0 < share.mean() < 1
    torch.testing.assert_close(facts["read_sum"], -share.mean().log(), rtol=1e-4, atol=1e-5)
    assert facts["read_n"] == 1 and 0 < facts["read_sum"] < whole["read_sum"]

    alone = dataclasses.replace(sample, fact_spans=list(sample.spans))  # as if the asked needle were alone
    with torch.no_grad():
        _, single = Objective(model, facts_cfg)(collate([alone]), grad_checkpoint=False)
    assert single["read_n"] == 1 and single["read_sum"] < 1e-4

    read_only = dataclasses.replace(facts_cfg, loss=dataclasses.replace(lo, answer=0.0, lm=0.0))
    _, grads = _grads(model, Objective(model, read_only), batch, grad_checkpoint=True)
    assert grads[f"model.layers.{layer}.self_attn.k_proj.lora_B"].abs().sum() > 0
    with pytest.raises(ConfigError, match="read_against"):
        load_config(None, ["loss.read_against='story'"])


def test_held_out_babi_stories_never_reach_training():
    from infinicli.babi import held_out
    from infinicli.babi import parse_babi as bench_parse

    stories = "".join(f"1 Mary went to room{i}.\n2 Where is Mary?\troom{i}\t1\n" for i in range(10))
    trained = {q.answer for q in parse_babi(stories)}
    asked = {s.answer for s in bench_parse(stories) if held_out(s.story)}
    assert asked == {"room4", "room9"}
    assert trained == {f"room{i}" for i in range(10)} - asked


# -- data layout ------------------------------------------------------------------------------------------


def test_recall_samples_ask_back_a_long_sequence_held_in_memory(tok, factory):
    """A recall needle holds 8-20 digits or 4-8 words; the answer repeats them in order, every token
    supervised; off by default (weight 0) and drawn only when its weight is set."""
    rng = random.Random(3)
    seen_words = seen_digits = False
    for _ in range(12):
        s = factory.sample(rng, 3, "recall")
        seq = s.answer.split(" is", 1)[1].strip(" :.")
        assert len(s.inserts) == 1 and s.inserts[0].count(seq) == 2
        if seq.isdigit():
            seen_digits = True
            assert 8 <= len(seq) <= 20
        else:
            seen_words = True
            assert 4 <= len(seq.split()) <= 8
        supervised = [x for x in s.labels if x != IGNORE]
        assert supervised == tok.encode(s.answer) + [tok.eos_id]
        assert tok.decode(supervised[:-1]).endswith(seq + ".")
        in_memory = tok.decode([t for seg in s.segments for t in seg])
        assert s.inserts[0] in in_memory or s.inserts[0] in tok.decode(s.final)  # local samples: in the tail
    assert seen_digits and seen_words
    assert factory.weights["recall"] == 0.0
    assert {factory.sample(rng, 2).kind for _ in range(30)} <= {"passkey", "babi", "lm"}


def test_first_segment_share_puts_needles_in_the_segment_written_into_an_empty_memory(tok, corpus):
    """data.first_segment = 1: every passkey / recall needle lies whole in the first written segment;
    at 0 (the default) needles spread over all of them; values outside [0, 1] are refused."""
    S1 = 256  # the shipped recipes' segment: room for prefix, file marker and a needle in the first one

    def needle_segments(share: float, kind: str) -> list[int]:
        cfg = load_config(
            None,
            [
                f"data.corpus={corpus}",
                'data.books=["books/miller.txt"]',
                "data.babi_tasks=[1]",
                "data.local=0",
                f"data.first_segment={share}",
            ],
        )
        fac = SampleFactory.from_corpus(tok, S1, cfg.data)
        rng, found = random.Random(5), []
        for _ in range(16):
            s = fac.sample(rng, 4, kind)
            ids = [t for seg in s.segments for t in seg]
            # the needle's inner tokens: the same however the text around it splits
            ins = tok.encode(" " + s.inserts[0])[1:-1]
            at = next(i for i in range(len(ids)) if ids[i : i + len(ins)] == ins)
            assert at + len(ins) <= len(ids)  # in memory
            found.append(at // S1 if at // S1 == (at + len(ins) - 1) // S1 else -1)
        return found

    assert set(needle_segments(1.0, "passkey")) == {0}
    assert set(needle_segments(1.0, "recall")) == {0}
    assert len(set(needle_segments(0.0, "passkey")) - {-1}) >= 3
    with pytest.raises(ConfigError, match="first_segment"):
        load_config(None, ["data.first_segment=1.5"])


def test_samples_have_the_engines_layout(tiny_model_dir, tok, factory):
    """Segments and final segment are exactly what Engine.read + Engine.final_segment feed the model."""
    from infinicli.engine import Engine
    from infinicli.loading import build_model
    from infinicli.readers import SourceDone, SourceInfo, SourceStart, TextPiece

    engine = Engine(build_model(tiny_model_dir, adapter=None), tok, segment_len=S, cut_window=0)
    written: list[list[int]] = []
    orig = engine.write_segment

    def spy(state, n):
        written.append(list(state.tail[:n]))
        orig(state, n)

    engine.write_segment = spy
    rng = random.Random(1)
    for kind in ["passkey", "passkey", "recall", "babi", "lm"]:
        n = rng.randint(2, 3)
        s = factory.sample(rng, n, kind)
        assert s.kind == kind and len(s.segments) == n and all(len(x) == S for x in s.segments)
        written.clear()
        src = SourceInfo(name=s.name, path=None, size=None, kind="text")
        events = [SourceStart(src), TextPiece(src, s.text), SourceDone(src, "0" * 64, len(s.text), None)]
        state = engine.read(events)
        assert written == s.segments
        if kind == "lm":
            assert s.final == engine.prefix_ids + state.tail
            assert [x for x in s.labels if x != IGNORE] == state.tail
            for seg, lab in zip(s.segments, s.segment_labels, strict=True):
                assert lab[-1] == IGNORE and all(b in (a, IGNORE) for a, b in zip(seg[1:], lab, strict=False))
            continue
        _, final = engine.final_segment(state, engine.question_tokens(s.question))
        answer = tok.encode(s.answer) + [tok.eos_id]
        assert s.final == final + answer[:-1]  # teacher forcing: the answer follows the final segment
        assert s.labels == [IGNORE] * (len(final) - 1) + answer
        memory_text = tok.decode([t for seg in s.segments for t in seg])
        assert s.inserts and all(x in memory_text for x in s.inserts)  # needles / facts are in memory


def test_needle_and_collate(factory):
    rng = random.Random(3)
    s = factory.sample(rng, 2, "passkey")
    assert s.question and s.answer and s.inserts and all(x in s.text for x in s.inserts)
    templates = [q for _, qs, _ in NEEDLES for q in qs]
    assert any(s.question.split("{")[0] and q.split("{")[0] in s.question for q in templates)
    b = collate([factory.sample(rng, 2) for _ in range(3)])
    assert b.segments.shape == (3, 2, S) and b.final.shape[0] == 3 and b.labels.shape == b.final.shape
    with pytest.raises(ValueError):
        collate([factory.sample(rng, 2), factory.sample(rng, 3)])


# -- gradients ------------------------------------------------------------------------------------------


def _grads(model, objective, batch, distill=None, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss, _ = objective(batch, distill, **kw)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_answer_gradient_reaches_layer0_gates_through_memory(trained_parts, factory):
    cfg, model, objective = trained_parts
    batch = collate([factory.sample(random.Random(5), 3, "passkey")])
    assert batch.segment_labels is None  # the loss is the answer on the final segment only
    _, carried = _grads(model, objective, batch)
    _, cut = _grads(model, objective, batch, detach_memory=True)
    g0 = "model.layers.0.self_attn.gate"
    assert carried[g0].abs().sum() > 0
    # the gate of layer 0 also acts through what later segments write: cutting the memory changes its gradient
    assert not torch.allclose(carried[g0], cut[g0], rtol=1e-4, atol=1e-9)
    k0 = "model.layers.0.self_attn.k_proj.lora_B"
    assert not torch.allclose(carried[k0], cut[k0], rtol=1e-4, atol=1e-9)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(trained_parts, factory):
    from infinicli.train.data import DistillPool

    cfg, model, objective = trained_parts
    rng = random.Random(7)
    batch = collate([factory.sample(rng, 3, "passkey"), factory.sample(rng, 3, "lm")])
    assert batch.segment_labels is not None
    distill = DistillPool(factory.tok, factory, 3, 40, 0).batch(rng, 2)
    l1, g1 = _grads(model, objective, batch, distill, grad_checkpoint=True)
    l2, g2 = _grads(model, objective, batch, distill, grad_checkpoint=False)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=1e-7)


def test_frozen_lower_layers_run_without_autograd_and_give_the_same_gradients(
    tiny_model_dir, corpus, tmp_path, factory
):
    """model.train_from_layer = 1: layer 0 runs outside autograd (and outside the checkpointed
    recomputation), yet loss and gradients of the layer-1 parameters equal those of the whole-model pass
    with layer 0 frozen."""
    from infinicli.train.loop import Objective, build_training_model, trainable_parameters

    cfg = tiny_config(tiny_model_dir, corpus, tmp_path, "model.train_from_layer=1")
    torch.manual_seed(0)
    lm, _, _ = build_training_model(cfg, torch.device("cpu"))
    model = lm.model
    gates, others = trainable_parameters(model, "lora", 1)
    names = [n for n, _ in gates + others]
    assert names and all(n.startswith("model.layers.1.") for n in names)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("model.layers.0."))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.normal_(0, 0.02)
    rng = random.Random(11)
    batch = collate([factory.sample(rng, 3, "passkey"), factory.sample(rng, 3, "lm")])
    assert batch.segment_labels is not None
    whole = tiny_config(tiny_model_dir, corpus, tmp_path)  # train_from_layer = 0: every layer under autograd
    l_ref, g_ref = _grads(model, Objective(model, whole), batch, grad_checkpoint=False)
    for ckpt in (True, False):
        loss, grads = _grads(model, Objective(model, cfg), batch, grad_checkpoint=ckpt)
        torch.testing.assert_close(loss, l_ref, rtol=1e-6, atol=1e-6)
        assert grads.keys() == g_ref.keys() == set(names)
        for k in grads:
            torch.testing.assert_close(grads[k], g_ref[k], rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="train_from_layer"):
        load_config(None, ["model.train_from_layer=-1"])


# -- the loop ---------------------------------------------------------------------------------------------


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_reduce_the_loss_on_a_tiny_task(tiny_model_dir, corpus, tmp_path, factory):
    """The optimizer of the loop (gates with the sharpness and the query gate, and LoRA groups) fits a small
    fixed set of passkey samples."""
    from infinicli.train.loop import Objective, build_training_model, make_optimizer, trainable_parameters

    sets = ("optim.lr=2e-2", "loss.distill=0", "model.mem_scale=true", "model.gate_query=true")
    sets += ("model.gate_content=true",)
    cfg = tiny_config(tiny_model_dir, corpus, tmp_path, *sets)
    torch.manual_seed(0)
    model = build_training_model(cfg, torch.device("cpu"))[0].model
    gates, others = trainable_parameters(model, "lora")
    opt = make_optimizer(gates, others, cfg)
    objective = Objective(model, cfg)
    rng = random.Random(11)
    batch = collate([factory.sample(rng, 2, "passkey") for _ in range(2)])
    losses = []
    for _ in range(15):
        loss, _ = objective(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    # the tiny model's small random embeddings bound how peaked its logits can get: CE cannot go far below
    # ln(vocab) - 2, so the bar is an absolute drop
    assert losses[-1] < losses[0] - 0.25 and sum(losses[-3:]) < sum(losses[:3]), losses
    assert all(g.item() != cfg.model.gate_init for n, p in gates if n.endswith(".gate") for g in p)  # moved
    scales = [p for n, p in gates if n.endswith(".mem_scale")]
    assert len(scales) == 2 and all(s.item() != 0.0 for p in scales for s in p)  # the sharpness learned too
    query_gates = [p for n, p in gates if n.endswith(".gate_q")]
    assert len(query_gates) == 2 and all(p.abs().max() > 0 for p in query_gates)  # and the query gate
    content = [p for n, p in gates if n.endswith((".gate_mem", ".gate_loc"))]
    assert len(content) == 4 and all(p.abs().max() > 0 for p in content)  # and the content gate


def test_key_convolution_taps_get_their_own_rate(tiny_model_dir, corpus, tmp_path):
    """optim.conv_lr puts the key convolution in its own undecayed group at that rate (the schedule's factor
    applies to it like the others); at 0 the taps stay in the LoRA group."""
    from infinicli.train.loop import build_training_model, group_lr, make_optimizer, trainable_parameters

    for conv_lr, names in ((0.05, ["gates", "attn", "conv"]), (0.0, ["gates", "attn"])):
        sets = ("model.key_conv=2", f"optim.conv_lr={conv_lr}", "optim.weight_decay=0.1")
        cfg = tiny_config(tiny_model_dir, corpus, tmp_path, *sets)
        model = build_training_model(cfg, torch.device("cpu"))[0].model
        gates, others = trainable_parameters(model, "lora")
        opt = make_optimizer(gates, others, cfg)
        assert [g["name"] for g in opt.param_groups] == names
        taps = {id(p) for n, p in others if n.endswith(".mem_k_conv")}
        assert len(taps) == 2  # one per layer of the tiny model
        for g in opt.param_groups:
            has_taps = any(id(p) in taps for p in g["params"])
            assert has_taps == (g["name"] == ("conv" if conv_lr else "attn"))
            assert g["lr"] == group_lr(g["name"], cfg.optim)
        if conv_lr:
            assert opt.param_groups[2]["lr"] == 0.05 and opt.param_groups[2]["weight_decay"] == 0.0


def test_resume_continues_exactly(tiny_model_dir, corpus, tmp_path):
    from infinicli.loading import read_adapter
    from infinicli.train.loop import train

    straight = tmp_path / "a"
    train(tiny_config(tiny_model_dir, corpus, straight))
    stopped = tmp_path / "b"
    cfg = tiny_config(tiny_model_dir, corpus, stopped)

    def stop(p):
        if p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_progress=stop)
    assert (stopped / "checkpoint.safetensors").is_file()
    _, meta = read_adapter(stopped / "adapter.safetensors")  # the steps done are a usable adapter
    assert meta["training"]["steps"] == 2 and not meta["training"]["complete"]
    train(cfg, resume=True)
    a, b = _metrics(straight), _metrics(stopped)
    assert [x["step"] for x in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7)
        assert x["tokens_seen"] == y["tokens_seen"]


def test_a_run_can_start_from_two_adapters_averaged(tiny_model_dir, corpus, tmp_path):
    """model.init_average_with: the run starts from w·A + (1 − w)·B, each memory-path LoRA update and gate
    mixed exactly (ranks summed), the start kept in the run folder as package_adapter's --average-with
    writes it, and the run trains on from there; an adapter of another shape is refused as a config error."""
    from infinicli.loading import average_adapters, read_adapter
    from infinicli.train.loop import build_training_model, train

    runs = []
    for seed in (1, 2):
        out = tmp_path / f"r{seed}"
        train(tiny_config(tiny_model_dir, corpus, out, "model.lora_scope=memory", "run.steps=2",
                          f"run.seed={seed}", "optim.lr=0.05"))  # fmt: skip
        runs.append(out / "adapter.safetensors")
    mix = [f"model.init_adapter={runs[0]}", f"model.init_average_with={runs[1]}"]
    mix.append("model.init_average_weight=0.3")
    out = tmp_path / "mixed"
    cfg = tiny_config(tiny_model_dir, corpus, out, "model.lora_scope=memory", *mix)
    lm, _, _ = build_training_model(cfg, torch.device("cpu"))
    start = out / "init_adapter.safetensors"
    tensors, meta = read_adapter(start)
    assert meta["packaged"]["averaged_with"] == {"adapter": str(runs[1]), "weight_of_from": 0.3}
    assert lm.model.icfg.lora_rank == 2 * cfg.model.lora_rank  # both low-rank updates, stacked
    (a, am), (b, bm) = read_adapter(runs[0]), read_adapter(runs[1])
    expect = average_adapters(a, dict(am["infini_config"]), b, bm["infini_config"], 0.3)
    assert set(tensors) == set(expect) and all(torch.equal(tensors[k], expect[k]) for k in tensors)
    x = torch.randn(5, lm.model.cfg.hidden_size)
    checked = 0
    for i, layer in enumerate(lm.model.model.layers):
        for name in ("mem_q_proj", "mem_k_proj", "mem_v_proj", "mem_o_proj"):
            key = f"model.layers.{i}.self_attn.{name}"
            if f"{key}.lora_A" not in a:
                continue
            delta = getattr(layer.self_attn, name)
            y = torch.zeros(5, delta.lora_B.shape[0])
            ua, ub = (t[f"{key}.lora_B"].float() @ t[f"{key}.lora_A"].float() for t in (a, b))
            want = delta.scale * x @ (0.3 * ua + 0.7 * ub).T
            torch.testing.assert_close(delta(x, y), want, atol=1e-5, rtol=1e-4)
            checked += 1
        gate = f"model.layers.{i}.self_attn.gate"
        torch.testing.assert_close(layer.self_attn.gate.detach(), 0.3 * a[gate] + 0.7 * b[gate])
    assert checked > 0

    train(cfg)  # and trains on from the average
    trained, meta = read_adapter(out / "adapter.safetensors")
    assert meta["training"]["recipe"]["model"]["init_average_with"] == str(runs[1])
    assert any(not torch.equal(trained[k], tensors[k]) for k in tensors)

    other = tmp_path / "other"
    train(tiny_config(tiny_model_dir, corpus, other, "run.steps=1"))  # LoRA on all projections: other tensors
    bad = tiny_config(tiny_model_dir, corpus, tmp_path / "bad", "model.lora_scope=memory", *mix[:1],
                      f"model.init_average_with={other / 'adapter.safetensors'}")  # fmt: skip
    with pytest.raises(ConfigError, match="init_average_with"):
        build_training_model(bad, torch.device("cpu"))
    with pytest.raises(ConfigError, match="init_average_weight"):
        tiny_config(tiny_model_dir, corpus, out, *mix[:2], "model.init_average_weight=1")
    with pytest.raises(ConfigError, match="needs model.init_adapter"):
        tiny_config(tiny_model_dir, corpus, out, mix[1])


def test_time_budget_fixes_steps_before_the_first_update(tiny_model_dir, corpus, tmp_path):
    from infinicli.train.loop import train

    out = tmp_path / "budget"
    notices: list[str] = []
    cfg = tiny_config(
        tiny_model_dir, corpus, out, "run.time_budget_s=2", "curriculum.ramp_fraction=0.5", "run.steps=100000"
    )
    train(cfg, on_notice=notices.append)
    saved = load_config(out / "config.toml")
    steps = saved.run.steps
    assert 1 <= steps < 100000
    assert saved.curriculum.ramp_steps == max(1, round(0.5 * steps))
    assert [m["step"] for m in _metrics(out)] == list(range(1, steps + 1))
    assert any(f"run.steps = {steps}" in n for n in notices)


def test_cli_train_writes_a_usable_adapter(tiny_model_dir, corpus, tmp_path, capsys):
    from infinicli.cli import main

    out = tmp_path / "cli"
    sets = [f"data.corpus={corpus}", f"model.model={tiny_model_dir}", "run.bf16=false", "loss.distill_pool=2"]
    sets += ["loss.distill_response_tokens=2", 'data.books=["books/miller.txt"]', "curriculum.start_max=2"]
    sets += ["model.write_chunk=4", "model.mem_scale=true", "model.mem_scale_init=1=2"]
    args = [
        "train",
        "--steps",
        "1",
        "--out",
        str(out),
        "--segment-len",
        str(S),
        "--set",
        "optim.grad_accum=1",
    ]
    for x in sets:
        args += ["--set", x]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "adapter.safetensors")
    assert "step 1/1 loss" in captured.err
    assert (out / "config.toml").is_file() and (out / "checkpoint.safetensors").is_file()
    from infinicli.loading import build_model, read_adapter

    _, meta = read_adapter(out / "adapter.safetensors")
    assert meta["training"]["steps"] == 1 and meta["model_shape"] and meta["infini_config"]["lora_rank"] == 8
    tensors, _ = read_adapter(out / "adapter.safetensors")
    # the sharpness, trained with the gates: layer 1 started at ln 2, layer 0 at 0 (one step moves little)
    assert (tensors["model.layers.1.self_attn.mem_scale"] - math.log(2)).abs().max() < 0.3
    assert tensors["model.layers.0.self_attn.mem_scale"].abs().max() < 0.3
    icfg = build_model(tiny_model_dir, adapter=out / "adapter.safetensors").model.icfg
    assert icfg.segment_len == S and icfg.write_chunk == 4  # the write size trained with travels along
    assert icfg.mem_scale
    assert main(["train", "--set", "optim.nope=1"]) == 2
    assert main(["train", "--set", "model.write_chunk=-1"]) == 2
    assert main(["train", "--set", "model.mem_scale_init=22,23"]) == 2  # no factor
    assert main(["train", "--set", "model.mem_scale_init=1=2"]) == 2  # without model.mem_scale


def test_torchrun_two_ranks_agree(tiny_model_dir, corpus, tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ddp"
    recipe = tmp_path / "ddp.toml"
    from infinicli.train.config import to_toml

    recipe.write_text(to_toml(tiny_config(tiny_model_dir, corpus, out, "run.steps=2", "optim.grad_accum=2")))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        INFINI_DEBUG="1",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "infinicli", "train", "--config", str(recipe), "-q"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    from infinicli.loading import read_adapter

    _, meta = read_adapter(out / "adapter.safetensors")
    assert meta["training"]["world_size"] == 2 and meta["training"]["ranks_agree"] is True
    assert meta["training"]["steps"] == 2


def test_default_recipe_matches_the_config_defaults():
    from infinicli.train.config import DEFAULT_RECIPE, read_toml

    assert TrainConfig.from_dict(read_toml(DEFAULT_RECIPE)) == TrainConfig()


def test_the_shipped_recipes_chain_and_the_last_one_made_the_shipped_adapter():
    """The committed recipes load; stage n starts from stage n-1's run folder; and the recipe recorded in the
    shipped adapter is the last stage's (only the time budget, which chose the steps the recipe now fixes,
    and the run folder may differ)."""
    from infinicli.loading import DEFAULT_ADAPTER, read_adapter
    from infinicli.train.config import DEFAULT_RECIPE

    folder = DEFAULT_RECIPE.parent
    for path in sorted(folder.glob("*.toml")):
        load_config(path)  # raises ConfigError on a stale key or value
    stages = [folder / "shipped.toml"]
    while (folder / f"shipped_stage{len(stages) + 1}.toml").is_file():
        stages.append(folder / f"shipped_stage{len(stages) + 1}.toml")
    assert len(stages) >= 2
    cfgs = [load_config(p) for p in stages]
    assert cfgs[0].model.init_adapter == "none"
    for n, (before, after) in enumerate(zip(cfgs[:-1], cfgs[1:], strict=True), start=1):
        assert after.model.init_adapter == f"{before.run.out}/adapter.safetensors"
        assert after.run.time_budget_s == 0 and after.run.steps > 0  # rerun step for step
        earlier = {f"{c.run.out}/adapter.safetensors" for c in cfgs[: n - 1]}
        if after.model.init_average_with != "none":  # a start averaged with an earlier stage of the chain
            assert after.model.init_average_with in earlier

    _, meta = read_adapter(DEFAULT_ADAPTER)
    # through from_dict: keys added since the adapter was trained take their defaults (which keep the old
    # behaviour), so the comparison is of what the run did, not of the config format of its day
    recorded = TrainConfig.from_dict(meta["training"]["recipe"]).to_dict()
    committed = cfgs[-1].to_dict()
    for d in (recorded, committed):
        d["run"].pop("time_budget_s")
        d["run"].pop("out")
    assert recorded == committed
    assert meta["training"]["complete"] and meta["training"]["steps"] == cfgs[-1].run.steps
    # an adapter shipped as an average (scripts/package_adapter.py --average-with) mixes the last stage with
    # an earlier stage of the same chain, named by its run folder
    averaged = meta.get("packaged", {}).get("averaged_with")
    if averaged:
        assert averaged["adapter"] in {f"{c.run.out}/adapter.safetensors" for c in cfgs[:-1]}
        assert 0.0 < averaged["weight_of_from"] < 1.0


def _empty_memory_logits(model_dir, adapter) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of one random segment read with an empty memory: (with `adapter` loaded, without)."""
    from infinicli.loading import build_model

    ids = torch.randint(0, 97, (1, S))
    with torch.no_grad():
        trained = build_model(model_dir, adapter=adapter, dtype=torch.float32).model
        base = build_model(model_dir, adapter=None, dtype=torch.float32).model
        a, _ = trained.forward_segment(ids, trained.empty_memory())
        b, _ = base.forward_segment(ids, base.empty_memory())
    return a, b


def test_memory_scoped_lora_trains_and_loads_as_the_base_model_with_empty_memory(
    tiny_model_dir, corpus, tmp_path
):
    """lora_scope=memory: the deltas learn (B leaves zero), no distillation batch is built, and the written
    adapter, loaded for inference, answers an empty-memory prompt exactly like no adapter at all."""
    from infinicli.loading import read_adapter
    from infinicli.train.loop import train

    out = tmp_path / "memscope"
    cfg = tiny_config(tiny_model_dir, corpus, out, "model.lora_scope=memory", "run.steps=3", "optim.lr=0.05")
    train(cfg)
    tensors, meta = read_adapter(out / "adapter.safetensors")
    assert meta["infini_config"]["lora_scope"] == "memory"
    assert any(".mem_v_proj.lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items())
    assert not (out / "distill_pool.json").exists()
    a, b = _empty_memory_logits(tiny_model_dir, out / "adapter.safetensors")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_local_lora_layers_train_and_load_merged(tiny_model_dir, corpus, tmp_path):
    """model.lora_local_layers on a memory-scoped run: the local LoRA learns in its layer only (the chat
    distillation kept with an empty memory, where it now has something to hold), the adapter
    records it, loads for inference (merged) and then differs from the base model with an empty memory; a
    run starting from it keeps it; layers below train_from_layer are refused (they would stay at zero)."""
    from infinicli.loading import average_adapters, read_adapter
    from infinicli.train.loop import build_training_model, train

    out = tmp_path / "local"
    sets = ("model.lora_scope=memory", "model.lora_local_layers=1", "model.lora_local_rank=2")
    train(
        tiny_config(
            tiny_model_dir, corpus, out, *sets, "run.steps=3", "optim.lr=0.05", "loss.distill_memory=false"
        )
    )
    assert (out / "distill_pool.json").exists()  # the empty-memory model is no longer the base: KL is not 0
    tensors, meta = read_adapter(out / "adapter.safetensors")
    ic = meta["infini_config"]
    assert ic["lora_local_layers"] == [1] and ic["lora_local_rank"] == 2
    local = {k: v for k, v in tensors.items() if ".self_attn.q_proj." in k or ".self_attn.v_proj." in k}
    assert local and all(k.startswith("model.layers.1.") for k in local)
    assert any(k.endswith("lora_B") and v.abs().sum() > 0 for k, v in local.items())
    assert local["model.layers.1.self_attn.q_proj.lora_A"].shape[0] == 2
    a, b = _empty_memory_logits(tiny_model_dir, out / "adapter.safetensors")
    assert not torch.allclose(a, b)
    mixed_icfg = dict(ic)
    average_adapters(tensors, mixed_icfg, tensors, ic, 0.5)
    assert (mixed_icfg["lora_rank"], mixed_icfg["lora_local_rank"]) == (2 * ic["lora_rank"], 4)

    start = f"model.init_adapter={out / 'adapter.safetensors'}"
    again = tiny_config(tiny_model_dir, corpus, tmp_path / "again", start)
    lm, _, _ = build_training_model(again, torch.device("cpu"))
    assert lm.model.icfg.lora_local_layers == (1,)
    q = lm.model.model.layers[1].self_attn.q_proj
    assert torch.equal(q.lora_B.detach(), tensors["model.layers.1.self_attn.q_proj.lora_B"])
    with pytest.raises(ConfigError, match="train_from_layer"):
        tiny_config(tiny_model_dir, corpus, out, *sets[:2], "model.lora_local_layers=0",
                    "model.train_from_layer=1")  # fmt: skip
    with pytest.raises(ConfigError, match="lora_local_layers"):
        bad = tiny_config(tiny_model_dir, corpus, tmp_path / "bad", "model.lora_local_layers=5", *sets[:1])
        build_training_model(bad, torch.device("cpu"))


def test_distill_with_memory_is_the_only_kl_a_memory_scoped_adapter_feels(
    tiny_model_dir, corpus, tmp_path, factory
):
    """With LoRA scoped to the memory path, the model reading a chat input with an empty memory is the base
    model (KL exactly 0, no gradient); loss.distill_memory reads it with the sample's memory instead, and the
    KL then reaches the gates and the LoRA."""
    from infinicli.train.loop import Objective, build_training_model, trainable_parameters

    rng = random.Random(5)
    batch = collate([factory.sample(rng, 3, "passkey")])
    ids = torch.randint(0, 100, (2, 24))
    mask = torch.ones(2, 24, dtype=torch.bool)
    kls = {}
    for on in (False, True):
        sets = ("model.lora_scope=memory", f"loss.distill_memory={'true' if on else 'false'}")
        cfg = tiny_config(tiny_model_dir, corpus, tmp_path / str(on), "loss.answer=0", "loss.lm=0", *sets)
        torch.manual_seed(0)
        model = build_training_model(cfg, torch.device("cpu"))[0].model
        gates, others = trainable_parameters(model, "lora")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_B" in name:
                    p.normal_(0, 0.02)
        loss, stats = Objective(model, cfg)(batch, (ids, mask))
        kls[on] = stats["kl_sum"].item()
        if on:
            loss.backward()
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in gates if n.endswith(".gate"))
    assert kls[False] == 0.0 and kls[True] > 1e-6, kls
