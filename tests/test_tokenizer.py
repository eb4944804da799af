"""infinicli.tokenizer against the reference, Hugging Face ``tokenizers`` on the same tokenizer.json.

Tiny byte-level BPE tokenizers are trained here, so most tests need no model. The real-model tests use a
converted model folder: ``$INFINI_TEST_MODEL_DIR``, else ``$INFINI_HOME/models/smollm2-135m``; they skip
when there is none. Corpus tests skip when ../shared/corpus is absent. ``INFINI_FUZZ_EXAMPLES`` sets the
number of hypothesis examples per fuzz test.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinicli import tokenizer as tkm
from infinicli.errors import ModelError
from infinicli.tokenizer import Tokenizer, load_tokenizer

FUZZ = settings(
    max_examples=int(os.environ.get("INFINI_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRAIN = [
    "The quick brown fox jumps over the lazy dog. 0123456789 1984 3.14159",
    "It was the best of times, it was the worst of times; the log said: ERROR disk full!!!",
    "Pierre's father wasn't there, they'll say. Où est la bibliothèque? Ça va. 日本語のテキスト 🙂👍🏽",
    "def main():\n    return 42\n\n\tTabs and   spaces   everywhere.\r\n\r\n    indented\n",
    "“Well, Prince, so Genoa and Lucca are now just family estates of the Buonapartes.” — he said…",
]
SAMPLES = [
    "",
    "a",
    " ",
    "Hello world",
    "  leading and trailing spaces   ",
    "tabs\tand\t\ttabs\n\n\nnewlines\r\n\r\nCRLF",
    "numbers 0 12 345 6789 3.14159 1,000,000 ¹²³ ½ ٣٤ 一二三",
    "Pierre's father wasn't there; they'll say I'd, you've, we're, he'S",
    "emoji 🙂👍🏽👨‍👩‍👧 flags 🇫🇷 and ZWJ",
    "unicode: Ça va? naïve café — “quotes” … 日本語 中文 한국어 Ελληνικά Русский עברית العربية",
    "specials as text: <|im_end|> <|im_start|>user\n<|endoftext|>",
    "whitespace zoo: \u00a0\u2000\u2003\u3000\u200b\u2028\u2029\u0085 \x0b\x0c end",
    "control \x00\x01\x04\x06\x13\x1c\x1d\x1f\x7f chars",
    "rare planes \U00010000 \U00020000 \U00042019\U00042026 \U000e0001 \U0010fffd",
    "!!!???...,,,;;;::: ((([[[{{{ }}}]]])))",
    "   \n   \n\t\t \u3000x",
    "a" * 3000 + " " + "b" * 5,
    " " * 500 + "x" + "\n" * 300,
]

# Characters the random texts are drawn from: the regex classes and their edges, plus anything.
ALPHABET = list("aZé日ж ' s t d l m r e v 0 9 ٣ ½ . , ! ? - — “ ” 🙂 👍 🏽") + [
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\u0085",
    "\x0b",
    "\x1c",
    "\x04",
    "\u200d",
    "\u0301",
    "'s",
    "'ll",
    "<|im_end|>",
    "\U00042019",
]
fuzz_text = st.lists(
    st.one_of(st.sampled_from(ALPHABET), st.characters(exclude_categories=("Cs",))), max_size=80
).map("".join)


# ------------------------------------------------------------------------------------------------------
# Tiny trained tokenizers (no model needed)


def _train(full_alphabet: bool = True) -> dict:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    kw = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()} if full_alphabet else {}
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False, **kw)
    tok.train_from_iterator(TRAIN * 20, trainer)
    return json.loads(tok.to_str())


def _write(path: Path, spec: dict, template: str | None = CHATML) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>"})
    )
    if template is not None:
        (path / "chat_template.jinja").write_text(template, encoding="utf-8")
    return path


def _with_digits(spec: dict, individual: bool) -> dict:
    spec = json.loads(json.dumps(spec))
    spec["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": individual}, spec["pre_tokenizer"]],
    }
    return spec


def _shuffled_ids(spec: dict) -> dict:
    """The same tokenizer with non-special ids permuted, so ids no longer follow merge order."""
    spec = json.loads(json.dumps(spec))
    vocab = spec["model"]["vocab"]
    fixed = {t["id"] for t in spec["added_tokens"]}
    movable = sorted(i for i in vocab.values() if i not in fixed)
    perm = movable[:]
    random.Random(7).shuffle(perm)
    mapping = dict(zip(movable, perm, strict=True))
    spec["model"]["vocab"] = {s: mapping.get(i, i) for s, i in vocab.items()}
    return spec


@pytest.fixture(scope="module")
def tiny_specs() -> dict[str, dict]:
    base = _train()
    return {
        "plain": base,
        "digits": _with_digits(base, individual=True),
        "digit-runs": _with_digits(base, individual=False),
        "shuffled": _shuffled_ids(base),
        "missing-bytes": _train(full_alphabet=False),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_specs) -> dict[str, tuple[Tokenizer, object]]:
    """name -> (our tokenizer, reference tokenizers.Tokenizer with specials treated as text)."""
    from tokenizers import Tokenizer as HFTokenizer

    out = {}
    for name, spec in tiny_specs.items():
        d = _write(tmp_path_factory.mktemp(f"tok-{name}"), spec)
        ref = HFTokenizer.from_file(str(d / "tokenizer.json"))
        ref.encode_special_tokens = True
        out[name] = (load_tokenizer(d), ref)
    return out


def _ref_ids(ref, text: str) -> list[int]:
    return ref.encode(text, add_special_tokens=False).ids


def _random_split(text: str, rng: random.Random, n: int) -> list[str]:
    cuts = sorted(rng.randint(0, len(text)) for _ in range(n))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _stream(tok: Tokenizer, pieces: list[str]) -> list[int]:
    return [i for chunk in tok.encode_stream(iter(pieces)) for i in chunk]


def test_tiny_uses_tiktoken(tiny):
    for name, (tok, _) in tiny.items():
        assert tok.backend == "tiktoken", (name, tok.fallback_reason)
        assert tok.eos_id == 2 and tok.bos_id == 1
        assert tok.special_tokens == {s: i for i, s in enumerate(SPECIALS)}
    assert tiny["missing-bytes"][0]._backend.has_placeholders
    assert tiny["shuffled"][0]._backend._rank_to_id is not None
    assert tiny["plain"][0]._backend._rank_to_id is None


@pytest.mark.parametrize("name", ["plain", "digits", "digit-runs", "shuffled", "missing-bytes"])
def test_tiny_ids_match_hf(tiny, name):
    tok, ref = tiny[name]
    for text in [*SAMPLES, *TRAIN, "\n".join(SAMPLES + TRAIN)]:
        assert tok.encode(text) == _ref_ids(ref, text), text


@pytest.mark.parametrize("name", ["plain", "digits", "shuffled", "missing-bytes"])
@FUZZ
@given(text=fuzz_text, seed=st.integers(0, 2**32 - 1))
def test_tiny_fuzz(tiny, name, text, seed):
    tok, ref = tiny[name]
    ids = tok.encode(text)
    assert ids == _ref_ids(ref, text)
    rng = random.Random(seed)
    assert _stream(tok, _random_split(text, rng, rng.randint(0, 12))) == ids
    if name != "missing-bytes":
        assert tok.decode(ids) == text


def test_tiny_big_text_batched_and_slow_path(tiny):
    """Long texts go through the threaded batch path; one stray untokenizable byte is patched locally."""
    text = "\n".join(SAMPLES + TRAIN) * 200
    assert len(text) > tkm._BATCH_MIN
    for name in ("plain", "shuffled", "missing-bytes"):
        tok, ref = tiny[name]
        assert tok.encode(text) == _ref_ids(ref, text), name


def test_tiny_specials(tiny):
    from tokenizers import Tokenizer as HFTokenizer

    tok, ref = tiny["plain"]
    with_specials = HFTokenizer.from_str(ref.to_str())
    assert tok.encode("<|im_end|>") != [2]
    assert tok.encode_with_specials("<|im_end|>") == [2]
    text = "<|im_start|>user\nhi <|im_end|>\n<|im_start|>assistant\n<|endoftext|><|im_end|><|im_end"
    assert tok.encode_with_specials(text) == with_specials.encode(text, add_special_tokens=False).ids
    assert tok.encode(text) == _ref_ids(ref, text)
    assert tok.decode(tok.encode_with_specials(text)) == text


def test_hf_backend_matches(tiny, tiny_specs, tmp_path):
    d = _write(tmp_path / "t", tiny_specs["plain"])
    hf = load_tokenizer(d, prefer="hf")
    tok, ref = tiny["plain"]
    assert hf.backend == "hf"
    for text in SAMPLES:
        assert hf.encode(text) == tok.encode(text) == _ref_ids(ref, text)
        assert _stream(hf, _random_split(text, random.Random(1), 5)) == hf.encode(text)
        assert hf.decode(hf.encode(text)) == text
    s = "<|im_start|>x<|im_end|>"
    assert hf.encode_with_specials(s) == tok.encode_with_specials(s)
    with pytest.raises(ValueError):
        load_tokenizer(d, prefer="sentencepiece")


def test_fallback_for_what_tiktoken_cannot_express(tiny_specs, tmp_path):
    """A normalizer (here NFKC + lowercase) is not expressible: the tokenizers library serves it."""
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(json.dumps(tiny_specs["plain"]))
    spec["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}
    d = _write(tmp_path / "n", spec)
    tok = load_tokenizer(d)
    assert tok.backend == "hf" and "normalizer" in (tok.fallback_reason or "")
    ref = HFTokenizer.from_file(str(d / "tokenizer.json"))
    ref.encode_special_tokens = True
    for text in SAMPLES:
        assert tok.encode(text) == _ref_ids(ref, text)
        assert _stream(tok, _random_split(text, random.Random(2), 6)) == tok.encode(text)
        dec = tok.decoder()
        ids = tok.encode(text)
        assert "".join(dec.push(i) for i in ids) + dec.flush() == tok.decode(ids)


def test_metaspace_byte_fallback_model(tmp_path):
    """A SentencePiece-style BPE (Metaspace, byte_fallback) runs on the tokenizers backend, streaming too."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hft = HFTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    hft.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    hft.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    hft.train_from_iterator(TRAIN * 20, trainer)
    d = tmp_path / "sp"
    d.mkdir()
    hft.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    tok = load_tokenizer(d)
    assert tok.backend == "hf" and tok.eos_id == 2 and tok.bos_id == 1
    ref = HFTokenizer.from_file(str(d / "tokenizer.json"))
    ref.encode_special_tokens = True
    text = "Hello  world. Ça va? 🙂 日本語\n  indented line\tend "
    ids = tok.encode(text)
    assert ids == _ref_ids(ref, text)
    assert _stream(tok, _random_split(text, random.Random(3), 8)) == ids
    dec = tok.decoder()
    streamed = "".join(dec.push(i) for i in ids) + dec.flush()
    assert streamed == tok.decode(ids) == ref.decode(ids, skip_special_tokens=False)


def test_stream_decoder_multibyte(tiny):
    tok, _ = tiny["plain"]
    text = "🙂👍🏽 日本語 é👨‍👩‍👧!"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # the tiny vocab splits these characters into byte tokens
    dec = tok.decoder()
    parts = [dec.push(i) for i in ids]
    parts.append(dec.flush())
    assert "".join(parts) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in parts)
    assert "" in parts  # some pushes held back an incomplete character
    # A dangling partial character comes out as U+FFFD on flush, like decode.
    dec = tok.decoder()
    cut = tok.encode("🙂")[:-1]
    assert "".join(dec.push(i) for i in cut) + dec.flush() == tok.decode(cut) == "\ufffd"


def test_stream_pieces_split_everywhere(tiny):
    tok, _ = tiny["plain"]
    text = "ab  \r\n\r\n  cd's  'll\t\t\n x 12 345  " * 3
    ids = tok.encode(text)
    assert _stream(tok, list(text)) == ids  # one character per piece
    for i in range(len(text) + 1):
        assert _stream(tok, [text[:i], "", text[i:]]) == ids


def test_stream_holds_a_bounded_tail(tiny, monkeypatch):
    tok, _ = tiny["plain"]
    seen: list[int] = []

    def pieces():
        for _ in range(50):
            yield "word " * 200
            seen.append(1)

    gen = tok.encode_stream(pieces())
    first = next(gen)
    assert first and len(seen) == 0  # tokens come out before the second piece is read
    # Past the cap, a text with no whitespace at all is cut (the only inexact case).
    monkeypatch.setattr(tkm, "MAX_STREAM_TAIL", 1000)
    chunks = list(tok.encode_stream(["x" * 600] * 5))
    assert len(chunks) >= 2


def test_decode_rejects_bad_ids(tiny):
    tok, _ = tiny["plain"]
    for bad in ([-1], [tok.vocab_size + 5]):
        with pytest.raises(ValueError):
            tok.decode(bad)


def test_chat_prompt(tiny, tiny_specs, tmp_path):
    tok, _ = tiny["plain"]
    msgs = [{"role": "user", "content": "Hi there"}]
    assert tok.chat_prompt(msgs) == (
        "<|im_start|>system\nYou are a tiny assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.chat_prompt(msgs, add_generation_prompt=False).endswith("Hi there<|im_end|>\n")
    # No template anywhere: ChatML.
    d = _write(tmp_path / "nt", tiny_specs["plain"], template=None)
    plain = load_tokenizer(d)
    assert plain.chat_prompt(msgs) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    # A template inside tokenizer_config.json, using the special-token variables.
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] | upper }}{% endfor %}{{ eos_token }}"
    )
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(d).chat_prompt(msgs) == "<|im_start|>HI THERE<|im_end|>"


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(ModelError):
        load_tokenizer(tmp_path)


# ------------------------------------------------------------------------------------------------------
# The real model's tokenizer


def _real_model_dir() -> Path | None:
    env = os.environ.get("INFINI_TEST_MODEL_DIR", "").strip()
    if env:
        return Path(env)
    home = Path(os.environ.get("INFINI_HOME", "").strip() or Path.home() / ".cache" / "infini").expanduser()
    return home / "models" / "smollm2-135m"


@pytest.fixture(scope="module")
def real():
    d = _real_model_dir()
    if d is None or not (d / "tokenizer.json").is_file():
        pytest.skip("no converted model folder (set INFINI_TEST_MODEL_DIR)")
    from tokenizers import Tokenizer as HFTokenizer

    ref = HFTokenizer.from_file(str(d / "tokenizer.json"))
    ref.encode_special_tokens = True
    return d, load_tokenizer(d), ref


def _books(corpus: Path) -> list[Path]:
    books = sorted((corpus / "books").glob("*.txt"))
    if not books:
        pytest.skip("no corpus books")
    return books


def test_real_basics(real):
    _, tok, ref = real
    assert tok.backend == "tiktoken", tok.fallback_reason
    assert tok.vocab_size == ref.get_vocab_size() == 49152
    assert tok.eos_id == ref.token_to_id("<|im_end|>") == 2
    assert tok.bos_id == ref.token_to_id("<|im_start|>")
    assert tok.special_tokens["<|endoftext|>"] == 0


def test_real_every_token_is_its_own_encoding(real):
    """tiktoken looks a whole pre-token up in the vocabulary before merging; Hugging Face BPE (without
    ignore_merges) merges. They agree when BPE turns each token's own text into that token."""
    _, _, ref = real
    added = {t.content for t in ref.get_added_tokens_decoder().values()}
    bad = [
        (s, i)
        for s, i in ref.get_vocab(with_added_tokens=False).items()
        if s not in added and [t.id for t in ref.model.tokenize(s)] != [i]
    ]
    assert not bad


def test_real_books_match_hf(real, corpus):
    _, tok, ref = real
    for book in _books(corpus):
        text = book.read_text(encoding="cp1252")
        if book.name == "tiny_shakespeare.txt":
            slices = [text]
        else:
            mid = len(text) // 2
            slices = [text[:200_000], text[mid : mid + 200_000]]
        for s in slices:
            ids = tok.encode(s)
            assert ids == _ref_ids(ref, s), book.name
            assert tok.decode(ids) == s
            pieces = _random_split(s, random.Random(len(s)), 40)
            assert _stream(tok, pieces) == ids


def test_real_samples_match_hf(real):
    _, tok, ref = real
    for text in [*SAMPLES, *TRAIN]:
        assert tok.encode(text) == _ref_ids(ref, text), text


# Bytes the SmolLM2 vocabulary has no token for (Hugging Face drops them, so they do not round-trip).
_MISSING_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)}


def test_real_missing_bytes(real):
    _, tok, _ = real
    table = tok._backend.table
    singles = {b[0] for i, b in enumerate(table) if b is not None and len(b) == 1}
    assert set(range(256)) - singles == _MISSING_BYTES


@FUZZ
@given(text=fuzz_text, seed=st.integers(0, 2**32 - 1))
def test_real_fuzz(real, text, seed):
    _, tok, ref = real
    ids = tok.encode(text)
    assert ids == _ref_ids(ref, text)
    rng = random.Random(seed)
    assert _stream(tok, _random_split(text, rng, rng.randint(0, 12))) == ids
    if not _MISSING_BYTES.intersection(text.encode("utf-8")):
        assert tok.decode(ids) == text


def test_real_stream_64k_pieces(real, corpus):
    _, tok, _ = real
    text = _books(corpus)[0].read_text(encoding="cp1252")[:600_000]
    pieces = [text[i : i + 65536] for i in range(0, len(text), 65536)]
    assert _stream(tok, pieces) == tok.encode(text)


def test_real_specials_and_decoder(real):
    _, tok, ref = real
    from tokenizers import Tokenizer as HFTokenizer

    assert tok.encode("<|im_end|>") != [2]
    assert tok.encode("<|im_end|>") == _ref_ids(ref, "<|im_end|>")
    assert tok.encode_with_specials("<|im_end|>") == [2]
    full = HFTokenizer.from_str(ref.to_str())
    s = "<|im_start|>user\nWhat is 2+2? 🙂<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode_with_specials(s) == full.encode(s, add_special_tokens=False).ids
    text = "Emoji 🙂👍🏽👨‍👩‍👧 and 日本語, Ελληνικά."
    ids = tok.encode(text)
    dec = tok.decoder()
    parts = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(parts) == text and not any("\ufffd" in p for p in parts)
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=False) == text


def test_real_chat_prompt_matches_transformers(real):
    d, tok, _ = real
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(d))
    for msgs in (
        [{"role": "user", "content": "Summarise the book."}],
        [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Who is Pierre?"},
            {"role": "assistant", "content": "Count Bezukhov's son."},
            {"role": "user", "content": "And Natasha? 🙂"},
        ],
    ):
        for gen in (True, False):
            want = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert tok.chat_prompt(msgs, add_generation_prompt=gen) == want
            assert tok.encode_with_specials(want) == list(hf(want, add_special_tokens=False)["input_ids"])


def test_real_with_digits_pretokenizer(real, tmp_path):
    """The original SmolLM2 tokenizer.json puts Digits(individual_digits) before ByteLevel."""
    d, _, _ = real
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, spec["pre_tokenizer"]],
    }
    d2 = _write(tmp_path / "digits", spec)
    tok = load_tokenizer(d2)
    assert tok.backend == "tiktoken"
    ref = HFTokenizer.from_file(str(d2 / "tokenizer.json"))
    ref.encode_special_tokens = True
    text = "\n".join([*SAMPLES, *TRAIN]) + " 1812: 100,000 men; x1 2x  3\n\n4 \U00011de0\U00011de1 7"
    assert tok.encode(text) == _ref_ids(ref, text)


@pytest.mark.parametrize("name", ["plain", "shuffled", "missing-bytes"])
def test_cached_tokenizer_equals_a_fresh_one(tiny_specs, tmp_path, name):
    d = _write(tmp_path / "model", tiny_specs[name])
    cache = tmp_path / "cache"
    fresh = load_tokenizer(d)
    built = load_tokenizer(d, cache_dir=cache)  # builds and writes the entry
    (entry,) = cache.glob("tokenizer-*.json")
    cached = load_tokenizer(d, cache_dir=cache)  # reads it
    assert isinstance(cached._backend, tkm._TiktokenBackend) and cached._backend._spec_json is None
    text = "Hello wörld 12345 <|im_start|>user\nnaïve   tabs\tand ÿ€ bytes<|im_end|>" * 3
    for tok in (built, cached):
        assert tok.encode(text) == fresh.encode(text)
        assert tok.encode_with_specials(text) == fresh.encode_with_specials(text)
        assert tok.decode(fresh.encode(text)) == fresh.decode(fresh.encode(text))
        assert (tok.eos_id, tok.bos_id, tok.special_tokens, tok.vocab_size) == (
            fresh.eos_id, fresh.bos_id, fresh.special_tokens, fresh.vocab_size,
        )  # fmt: skip
    assert entry.is_file()


def test_tokenizer_cache_follows_the_files_and_survives_damage(tiny_specs, tmp_path):
    d = _write(tmp_path / "model", tiny_specs["plain"])
    cache = tmp_path / "cache"
    load_tokenizer(d, cache_dir=cache)
    (entry,) = cache.glob("tokenizer-*.json")
    entry.write_text("{ not json")  # a damaged entry is rebuilt, not trusted
    tok = load_tokenizer(d, cache_dir=cache)
    assert tok.encode("hello there") == load_tokenizer(d).encode("hello there")
    assert json.loads(entry.read_text())["tokenizer"]["eos_id"] == tok.eos_id
    _write(d, tiny_specs["shuffled"])  # another tokenizer.json in the same folder: a new entry
    other = load_tokenizer(d, cache_dir=cache)
    assert len(list(cache.glob("tokenizer-*.json"))) == 2
    assert other.encode("hello there") == load_tokenizer(d).encode("hello there")
