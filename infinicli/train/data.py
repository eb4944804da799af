"""Training samples, laid out exactly as the product feeds the model.

The product (infinicli.engine) reads a document as one token stream

    prefix_ids + encode(file_marker(name) + text)

where prefix_ids is the chat template's opening of a user turn (`chat_frame`). The stream is cut into
segments of S tokens, each written to memory (eq. 4/5); the remainder (< S tokens, the tail) goes into the
final segment

    prefix_ids + tail + encode("\\n\\n" + question) + encode_with_specials(suffix)

and the answer follows it (then `<|im_end|>`). `layout()` reproduces `Engine.read` + `Engine.final_segment`
token for token (tests check it against the engine), and every generator below builds its sample through it:

* passkey: a needle ("The pass key is N. Remember it. N is the pass key." and variants: secret codes, vault
  combinations, people and their cities or jobs, hidden objects) at a random depth of a haystack (repeated
  filler sentences or natural book text), sometimes with a distracting second needle of another kind;
* babi: the facts of a bAbI story (train split, minus the stories held out in infinicli.babi), scattered in
  order through book text, the question at the end, the one-word answer (BABILong style); for QA1 stories
  with `babi_questions` > 1, the same memory is also asked where the story's other people are (each a final
  segment of its own: one read of the memory supervises several people, who must not be confused);
* recall: a long sequence (8-20 digits, or 4-8 words) in one needle, asked back whole: every answer token
  is a retrieval that depends on the token before it, so one sample supervises the order of many tokens
  read through memory (the pass-key misses were the right digits in the wrong order);
* lm: plain book text with next-token loss on every segment and on the tail, memory carried.

Distillation inputs (`DistillPool`) are short chat turns (fixed prompts and book-passage prompts) that the
loop completes once with the frozen base model.

Everything random comes from the `random.Random` passed in, so a sample is a pure function of its seed.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from infinicli.babi import held_out, qa1_move, question_text, whereabouts
from infinicli.babi import parse_babi as parse_babi_file
from infinicli.engine import chat_frame, file_marker
from infinicli.tokenizer import Tokenizer
from infinicli.train.config import HELD_OUT_BOOKS, DataSection

IGNORE = -100  # label of positions without a loss

FILLERS = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "The river runs to the sea. Birds sing in the morning. The town is quiet at night. Life goes on.",
    "It was a long day at the office. The printer was broken again. Everyone waited for the weekend.",
    "The train left the station on time. Fields passed by the window. A child counted the cows.",
)

# (needle, questions, answer); fields: {k} number, {name}, {city}, {job}, {thing}, {place}
NEEDLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "The pass key is {k}. Remember it. {k} is the pass key.",
        ("What is the pass key?", "What is the pass key mentioned in the text?", "Tell me the pass key."),
        "The pass key is {k}.",
    ),
    (
        "The secret code is {k}. Remember it. {k} is the secret code.",
        ("What is the secret code?", "Which secret code does the text give?"),
        "The secret code is {k}.",
    ),
    (
        "The combination of the vault is {k}. Keep it in mind: the vault opens with {k}.",
        ("What is the combination of the vault?", "Which number opens the vault?"),
        "The combination of the vault is {k}.",
    ),
    (
        "{name} lives in {city}. Remember it: {name}'s home is in {city}.",
        ("Where does {name} live?", "In which city does {name} live?"),
        "{name} lives in {city}.",
    ),
    (
        "{name} works as a {job}. That is {name}'s job: {job}.",
        ("What does {name} do for a living?", "What is {name}'s job?"),
        "{name} works as a {job}.",
    ),
    (
        "The {thing} is hidden in the {place}. Remember: the {thing} is in the {place}.",
        ("Where is the {thing} hidden?", "Where can the {thing} be found?"),
        "The {thing} is hidden in the {place}.",
    ),
)
# recall needles: (needle, questions, answer, words); {s} a long sequence of words (words) or digits
RECALL_NEEDLES: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    (
        "The pass key is {s}. Remember it. {s} is the pass key.",
        ("What is the pass key?", "Tell me the pass key."),
        "The pass key is {s}.",
        False,
    ),
    (
        "The serial number is {s}. Write it down: {s}.",
        ("What is the serial number?", "Which serial number does the text give?"),
        "The serial number is {s}.",
        False,
    ),
    (
        "The account number is {s}. Keep it safe: the account number is {s}.",
        ("What is the account number?",),
        "The account number is {s}.",
        False,
    ),
    (
        "The password is: {s}. Say it exactly like that: {s}.",
        ("What is the password?", "Tell me the password, word for word."),
        "The password is: {s}.",
        True,
    ),
)
RECALL_WORDS = (
    "apple", "river", "stone", "candle", "window", "tiger", "violet", "hammer", "cloud", "mirror", "garden",
    "pepper", "rocket", "silver", "ladder", "orange", "castle", "feather", "button", "harbor", "lemon",
    "forest", "copper", "pencil", "thunder", "marble", "desert", "anchor", "velvet", "engine", "meadow",
)  # fmt: skip
PEOPLE = (
    "Alice", "Omar", "Priya", "Lena", "Hiro", "Carlos", "Fatima", "Ivan", "Grace", "Tomas", "Amara", "Kenji",
    "Sofia", "Mateo", "Ingrid", "Yusuf", "Chloe", "Arjun", "Nadia", "Felix", "Mei", "Oscar", "Zara", "Bruno",
)  # fmt: skip
CITIES = (
    "Lisbon", "Nairobi", "Oslo", "Kyoto", "Lima", "Cairo", "Dublin", "Hanoi", "Quito", "Riga", "Perth",
    "Seville", "Tbilisi", "Montreal", "Krakow", "Accra", "Bergen", "Porto", "Manila", "Valparaiso",
)  # fmt: skip
JOBS = (
    "baker", "pilot", "nurse", "carpenter", "librarian", "chemist", "fisherman", "teacher", "architect",
    "tailor", "surgeon", "gardener", "violinist", "plumber", "journalist", "watchmaker",
)  # fmt: skip
THINGS = ("red key", "old map", "silver coin", "blue notebook", "brass compass", "spare ticket", "letter")
PLACES = (
    "kitchen drawer", "garden shed", "attic", "blue vase", "library", "cellar", "piano bench", "boathouse",
    "clock tower", "second drawer of the desk", "flower pot", "old boot",
)  # fmt: skip
FILE_NAMES = (
    "document.txt", "notes.txt", "report.txt", "story.txt", "chapter_{i}.txt", "book.txt", "draft_{i}.md",
    "archive/part{i}.txt", "letters.txt", "minutes_{i}.txt", "input.txt", "<stdin>",
)  # fmt: skip

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for staying focused while studying.",
    "Who wrote Romeo and Juliet?",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Hello! How are you today?",
    "Summarize the story of Cinderella in two sentences.",
    "What are the colors of the rainbow?",
    "Tell me a fun fact about octopuses.",
    "What is the difference between weather and climate?",
    "Suggest a name for a friendly cat.",
    "Why is the sky blue?",
    "Write a polite email declining a meeting invitation.",
    "What should I pack for a weekend hiking trip?",
)
PASSAGE_PROMPTS = (
    "Summarize this passage:\n\n{p}",
    "Who are the people in the following text?\n\n{p}",
    "{p}\n\nWhat is this passage about?",
    "Read the text below and describe its mood in one sentence.\n\n{p}",
)

_SENTENCE_END = re.compile(r"[.!?][\"'”’)]?(?=\s)")
_WORD_END = re.compile(r"\S(?=\s)")


def corpus_dir(setting: str = "") -> Path:
    """The shared corpus: the setting, else $INFINI_CORPUS, else <repo>/../shared/corpus."""
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("INFINI_CORPUS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def read_book(path: Path) -> str:
    """A book's text: UTF-8, else cp1252 (the Tolstoy files). Held-out books are refused."""
    if path.name in HELD_OUT_BOOKS:
        raise ValueError(f"{path.name} is held out for the perplexity benchmark and must not be trained on")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n")


@dataclass
class BabiQuestion:
    facts: list[str]  # the story's statements hidden in the document, in order
    question: str
    answer: str


def parse_babi(text: str, context: str = "support") -> list[BabiQuestion]:
    """bAbI task file → the questions of the stories not held out for the benchmark (infinicli.babi), each
    with its facts: from the earliest supporting fact on (context "support"), or every fact of the story
    before the question ("story", as the benchmark asks). Questions without facts are dropped."""
    out: list[BabiQuestion] = []
    for s in parse_babi_file(text):
        if held_out(s.story):  # reserved for `infini bench babilong`
            continue
        facts = s.facts if context == "story" else s.facts_from_support()
        if facts:
            out.append(BabiQuestion(facts, s.question, s.answer))
    return out


@dataclass
class Sample:
    """One training sample in the product's layout.

    segments: token lists of exactly S tokens, written to memory in order;
    segment_labels: per segment, the token each position must predict (IGNORE: none), or None (no LM loss);
    final: the final segment's input (prefix + tail + question + suffix, then the answer tokens);
    labels: aligned with final, the token each position must predict (the answer and <|im_end|>), else IGNORE;
    inserts: the needles / facts hidden in the document text (in memory unless the sample is local);
    more: further (final, labels) pairs that read the same memory (other questions about the same document);
    spans: the [start, end) token positions, in the written stream (segment j holds j·S..(j+1)·S), of the
    sentences in memory that answer the question (the asked needle; a QA1 question's moves of the asked
    person), empty when none is known; more_spans: the same for each `more` question;
    fact_spans: the same for every sentence hidden in memory (all needles, all of a story's facts): what a
    question's answering sentences compete with (loss.read_against = "facts").
    """

    kind: str
    segments: list[list[int]]
    segment_labels: list[list[int]] | None
    final: list[int]
    labels: list[int]
    name: str = ""
    text: str = ""
    question: str = ""
    answer: str = ""
    inserts: list[str] = field(default_factory=list)
    more: list[tuple[list[int], list[int]]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    more_spans: list[list[tuple[int, int]]] = field(default_factory=list)
    fact_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.segments) + len(self.final) + sum(len(f) for f, _ in self.more)


@dataclass
class Batch:
    kinds: list[str]
    segments: torch.Tensor  # [B, n, S] long
    segment_labels: (
        torch.Tensor | None
    )  # [B, n, S] long, IGNORE where no loss; None when no sample has LM loss
    final: torch.Tensor  # [R, T] long, right-padded: every sample's final segment, then its `more` ones
    labels: torch.Tensor  # [R, T] long, IGNORE on padding
    tokens: int
    owner: torch.Tensor | None = None  # [R] long: the sample whose memory each final row reads (None: R = B)
    # [R, n, S] float: 1 on the memory tokens of the sentences that answer each final row's question (Sample.
    # spans); None when no row has any
    support: torch.Tensor | None = None
    # [R, n, S] float: 1 on the memory tokens of every sentence hidden in the row's document
    # (Sample.fact_spans) and of its answering sentences; None when support is None
    facts: torch.Tensor | None = None

    @property
    def row_kinds(self) -> list[str]:
        """The kind of each final row (its sample's)."""
        return self.kinds if self.owner is None else [self.kinds[i] for i in self.owner.tolist()]

    def to(self, device: torch.device) -> Batch:
        sl = None if self.segment_labels is None else self.segment_labels.to(device)
        return Batch(
            self.kinds,
            self.segments.to(device),
            sl,
            self.final.to(device),
            self.labels.to(device),
            self.tokens,
            None if self.owner is None else self.owner.to(device),
            None if self.support is None else self.support.to(device),
            None if self.facts is None else self.facts.to(device),
        )


def collate(samples: Sequence[Sample], pad_id: int = 0) -> Batch:
    """Stack samples that have the same number of segments; final segments (each sample's, then its `more`
    ones) are right-padded (causal attention: padding after a sequence cannot change it)."""
    n = {len(s.segments) for s in samples}
    if len(n) != 1:
        raise ValueError(f"samples of one batch need the same number of segments, got {sorted(n)}")
    rows = [(i, s.final, s.labels) for i, s in enumerate(samples)]
    rows += [(i, f, lab) for i, s in enumerate(samples) for f, lab in s.more]
    B, T = len(samples), max(len(f) for _, f, _ in rows)
    nseg = n.pop()
    S = len(samples[0].segments[0]) if nseg else 0
    segs = torch.tensor([s.segments for s in samples], dtype=torch.long).view(B, nseg, S)
    seg_labels = None
    if any(s.segment_labels is not None for s in samples):
        seg_labels = torch.full((B, nseg, S), IGNORE, dtype=torch.long)
        for i, s in enumerate(samples):
            if s.segment_labels is not None:
                seg_labels[i] = torch.tensor(s.segment_labels, dtype=torch.long).view(nseg, S)
    final = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for r, (_, f, lab) in enumerate(rows):
        final[r, : len(f)] = torch.tensor(f, dtype=torch.long)
        labels[r, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    owner = torch.tensor([i for i, _, _ in rows], dtype=torch.long) if len(rows) > B else None
    row_spans = [s.spans for s in samples]
    if any(s.more_spans and len(s.more_spans) != len(s.more) for s in samples):
        raise ValueError("a sample's more_spans must be empty or give the spans of each `more` question")
    row_spans += [sp for s in samples for sp in (s.more_spans or [[] for _ in s.more])]
    support = facts = None
    if any(row_spans):
        support = torch.zeros(len(rows), nseg * S)
        for r, spans in enumerate(row_spans):
            for a, b in spans:
                support[r, a:b] = 1.0
        facts = support.clone()  # the answering sentences are facts too
        for r, (i, _, _) in enumerate(rows):
            for a, b in samples[i].fact_spans:
                facts[r, a:b] = 1.0
        support, facts = support.view(len(rows), nseg, S), facts.view(len(rows), nseg, S)
    kinds = [s.kind for s in samples]
    tokens = sum(s.tokens for s in samples)
    return Batch(kinds, segs, seg_labels, final, labels, tokens, owner, support, facts)


def layout(
    prefix_ids: Sequence[int], doc_ids: Sequence[int], prompt_ids: Sequence[int], S: int
) -> tuple[list[list[int]], list[int]]:
    """(segments written to memory, final segment) exactly as Engine.read + Engine.final_segment make them
    with fixed cuts (cut_window 0): a batch needs segments of one length, so training always cuts there."""
    stream = list(prefix_ids) + list(doc_ids)
    n = len(stream) // S
    segments = [stream[i * S : (i + 1) * S] for i in range(n)]
    toks = stream[n * S :] + list(prompt_ids)
    while len(toks) > 2 * S:  # an over-long question: Engine writes whole segments first
        segments.append(toks[:S])
        toks = toks[S:]
    return segments, list(prefix_ids) + toks


class SampleFactory:
    """Makes training samples for one tokenizer and segment length (see the module docstring)."""

    def __init__(
        self,
        tok: Tokenizer,
        segment_len: int,
        cfg: DataSection | None = None,
        books: dict[str, str] | None = None,
        babi: list[BabiQuestion] | None = None,
    ):
        self.tok = tok
        self.S = int(segment_len)
        self.cfg = cfg or DataSection()
        self.prefix, self.suffix = chat_frame(tok)
        self.prefix_ids = tok.encode_with_specials(self.prefix)
        self.suffix_ids = tok.encode_with_specials(self.suffix)
        self.books = [t for t in (books or {}).values() if len(t) > 2000]
        self.babi = babi or []
        self._cpt = {}  # characters per token of each book
        for i, t in enumerate(self.books):
            probe = t[:200_000]
            self._cpt[i] = len(probe) / max(1, len(tok.encode(probe)))
        # sample kinds: their makers, and their mixture weights (data.<kind>)
        self._makers = {
            "passkey": self.passkey,
            "recall": self.recall,
            "babi": self.babi_sample,
            "lm": self.lm,
        }
        w = {k: float(getattr(self.cfg, k)) for k in self._makers}
        if not self.babi:
            w["babi"] = 0.0
        if not self.books:
            w["lm"] = 0.0  # LM samples need natural text
        if sum(w.values()) <= 0:
            w = {k: float(k == "passkey") for k in w}
        self.weights = w

    @classmethod
    def from_corpus(cls, tok: Tokenizer, segment_len: int, cfg: DataSection) -> SampleFactory:
        """Load the books and bAbI train files named in cfg (missing corpus: filler haystacks only)."""
        root = corpus_dir(cfg.corpus)
        books: dict[str, str] = {}
        for b in cfg.books:
            p = Path(b) if Path(b).is_absolute() else root / b
            if p.is_file():
                books[p.name] = read_book(p)
        babi: list[BabiQuestion] = []
        if cfg.babi > 0 and (root / "babi").is_dir():
            for task in cfg.babi_tasks:
                for f in sorted((root / "babi").glob(f"qa{int(task)}_*train.txt")):
                    babi.extend(parse_babi(f.read_text(encoding="utf-8"), cfg.babi_context))
        return cls(tok, segment_len, cfg, books, babi)

    # -- helpers -------------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """Engine.question_tokens."""
        return self.tok.encode("\n\n" + question.strip()) + self.suffix_ids

    def answer_ids(self, answer: str) -> list[int]:
        return self.tok.encode(answer) + [self.tok.eos_id]

    def _file_name(self, rng: random.Random) -> str:
        return rng.choice(FILE_NAMES).format(i=rng.randint(1, 40))

    def _haystack(self, rng: random.Random, n_tokens: int, filler: bool) -> str:
        """Text of at least n_tokens tokens: repeated filler sentences or a slice of a book."""
        if filler or not self.books:
            unit = rng.choice(FILLERS)
            per = max(1, len(self.tok.encode(" " + unit)))
            reps = n_tokens // per + 2
            parts = []
            for i in range(reps):
                parts.append(unit)
                parts.append("\n\n" if i % 5 == 4 else " ")
            return "".join(parts).strip()
        bi = rng.randrange(len(self.books))
        book, cpt = self.books[bi], self._cpt[bi]
        n_chars = int(n_tokens * cpt * 1.25) + 400
        for _ in range(4):
            start = rng.randrange(0, max(1, len(book) - n_chars))
            nl = book.find("\n", start)
            start = nl + 1 if 0 <= nl < start + 500 else start
            text = book[start : start + n_chars].strip()
            if len(self.tok.encode(text)) >= n_tokens:
                return text
            n_chars = int(n_chars * 1.5)
        return (book * 2)[: n_chars * 2]

    @staticmethod
    def _boundary(text: str, pos: int) -> int:
        """The last sentence end (else word end) at or before pos, else the first after it: an index whose
        character is whitespace (so an inserted " sentence" keeps the tokenization around it)."""
        lo = max(0, pos - 400)
        for pattern in (_SENTENCE_END, _WORD_END):
            ends = [m.end() for m in pattern.finditer(text, lo, min(len(text), pos + 1))]
            if ends and ends[-1] <= pos:
                return ends[-1]
        m = _WORD_END.search(text, pos)
        return m.end() if m is not None else len(text)

    def _round_trips(self, ids: list[int]) -> bool:
        return self.tok.encode(self.tok.decode(ids)) == ids

    def _document(
        self, rng: random.Random, n: int, inserts: list[str], local: bool, filler: bool, first: bool = False
    ) -> tuple[str, str, list[int]] | None:
        """(file name, text, document token ids) with exactly n full segments of prefix + document and
        every insert (in order) at random depths inside the written segments (local: inside the tail;
        first: inside the first segment)."""
        S, P = self.S, len(self.prefix_ids)
        name = self._file_name(rng)
        marker = file_marker(name)
        m_len = len(self.tok.encode(marker))
        ins_tok = sum(len(self.tok.encode(" " + s)) for s in inserts)
        lo_t = self.cfg.min_tail + (ins_tok + 8 if local else 0)
        mem_room = n * S - P - m_len  # document tokens that end up in memory
        if lo_t > S - 1 or mem_room < (0 if local else ins_tok + 4) or mem_room < 0:
            return None
        t = rng.randint(lo_t, S - 1)
        doc_need = n * S + t - P  # marker + text tokens
        hay = self._haystack(rng, doc_need - m_len + 16, filler)
        hay_ids = len(self.tok.encode(hay))
        cpt = len(hay) / max(1, hay_ids)
        if inserts:
            if local:
                lo, hi = mem_room + 2, doc_need - m_len - ins_tok - 2
            else:
                lo, hi = 0, (S - P - m_len if first else mem_room) - ins_tok - 2
            if hi <= lo:
                return None
            depths = sorted(rng.uniform(lo, hi) for _ in inserts)
            cuts = [self._boundary(hay, int(d * cpt)) for d in depths]
            pieces, last = [], 0
            for c, s in zip(cuts, inserts, strict=True):
                pieces.append(hay[last:c])
                pieces.append(" " + s)
                last = c
            pieces.append(hay[last:])
            hay = "".join(pieces)
        ids = self.tok.encode(marker + hay)
        if len(ids) < doc_need:
            return None
        # cut the document at doc_need tokens (or a little before, at a sentence end) so that the cut text
        # tokenizes to exactly those ids (the engine tokenizes the text, not our ids)
        low = max(n * S - P + 1, doc_need - 48)
        cut = None
        for c in range(doc_need, low - 1, -1):
            piece = self.tok.decode(ids[c - 1 : c]).rstrip()
            if piece.endswith((".", "!", "?", '"', "”")) and self._round_trips(ids[:c]):
                cut = c
                break
        else:
            cut = next((c for c in range(doc_need, low - 1, -1) if self._round_trips(ids[:c])), None)
        if cut is None:
            return None
        decoded = self.tok.decode(ids[:cut])
        if not decoded.startswith(marker):
            return None
        text = decoded[len(marker) :]
        # every insert must lie where it was meant to: in memory (not local) or in the tail (local)
        pos = 0
        for s in inserts:
            start = text.find(" " + s, pos)
            if start < 0:
                return None
            end = start + 1 + len(s)
            pos = end
            tok_end = P + len(self.tok.encode(marker + text[:end]))
            if not local and tok_end > (S if first else n * S):
                return None
            if local and P + len(self.tok.encode(marker + text[:start])) < n * S:
                return None
        return name, text, ids[:cut]

    def _insert_spans(
        self, doc: tuple[str, str, list[int]], inserts: list[str]
    ) -> list[tuple[int, int] | None]:
        """The [start, end) token positions of each insert (found in order, as `_document` placed them) in the
        written stream prefix + document; None for one not wholly in the written segments."""
        name, text, doc_ids = doc
        marker, P = file_marker(name), len(self.prefix_ids)
        written = (P + len(doc_ids)) // self.S * self.S
        out: list[tuple[int, int] | None] = []
        pos = 0
        for s in inserts:
            start = text.find(" " + s, pos)
            if start < 0:
                out.append(None)
                continue
            pos = start + 1 + len(s)
            a = P + len(self.tok.encode(marker + text[:start]))
            b = P + len(self.tok.encode(marker + text[:pos]))
            out.append((a, b) if b <= written else None)
        return out

    def _qa_sample(
        self, kind: str, doc: tuple[str, str, list[int]], question: str, answer: str, inserts: list[str]
    ) -> Sample:
        name, text, doc_ids = doc
        prompt = self.prompt_ids(question)
        ans = self.answer_ids(answer)
        segments, final = layout(self.prefix_ids, doc_ids, prompt, self.S)
        labels = [IGNORE] * (len(final) - 1) + ans  # position len(final)-1 predicts the first answer token
        final = final + ans[:-1]
        return Sample(kind, segments, None, final, labels, name, text, question, answer, list(inserts))

    # -- generators ----------------------------------------------------------------------------------
    def _needle(self, rng: random.Random, idx: int) -> tuple[str, str, str]:
        needle, questions, answer = NEEDLES[idx]
        if idx < 2:  # the classic 5-digit keys
            k = rng.randint(10000, 99999)
        else:
            digits = rng.randint(3, 6)
            k = rng.randint(10 ** (digits - 1), 10**digits - 1)
        f = dict(
            k=k,
            name=rng.choice(PEOPLE),
            city=rng.choice(CITIES),
            job=rng.choice(JOBS),
            thing=rng.choice(THINGS),
            place=rng.choice(PLACES),
        )
        return needle.format(**f), rng.choice(questions).format(**f), answer.format(**f)

    def recall(self, rng: random.Random, n: int) -> Sample | None:
        """A needle holding a long digit or word sequence, asked back whole (see the module docstring)."""
        needle, questions, answer, words = RECALL_NEEDLES[rng.randrange(len(RECALL_NEEDLES))]
        if words:
            seq = " ".join(rng.sample(RECALL_WORDS, rng.randint(4, 8)))
        else:
            seq = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(7, 19)))
        inserts = [needle.format(s=seq)]
        doc = self._needle_document(rng, n, inserts)
        if doc is None:
            return None
        sample = self._qa_sample("recall", doc, rng.choice(questions), answer.format(s=seq), inserts)
        sample.spans = [sp for sp in self._insert_spans(doc, inserts) if sp is not None]
        sample.fact_spans = list(sample.spans)
        return sample

    def _needle_document(
        self, rng: random.Random, n: int, inserts: list[str]
    ) -> tuple[str, str, list[int]] | None:
        """`_document` for needles: a filler or book haystack, the needles in memory (in the tail for a
        `local` share of samples, in the first segment for a `first_segment` share of the others)."""
        local = rng.random() < self.cfg.local
        filler = rng.random() < self.cfg.filler_haystack
        # no draw at share 0, so recipes from before this option still get the same samples
        first = not local and self.cfg.first_segment > 0 and rng.random() < self.cfg.first_segment
        return self._document(rng, n, inserts, local, filler, first)

    def passkey(self, rng: random.Random, n: int) -> Sample | None:
        """A needle (passkey or another fact) in a filler or book haystack; question and answer about it."""
        # the classic pass key in half of the samples, the other templates share the rest
        idx = 0 if rng.random() < 0.5 else rng.randrange(1, len(NEEDLES))
        needle, question, answer = self._needle(rng, idx)
        inserts = [needle]
        if rng.random() < self.cfg.second_needle:
            other = rng.choice([i for i in range(len(NEEDLES)) if i != idx])
            inserts.insert(rng.randrange(2), self._needle(rng, other)[0])
        doc = self._needle_document(rng, n, inserts)
        if doc is None:
            return None
        sample = self._qa_sample("passkey", doc, question, answer, inserts)
        spans = self._insert_spans(doc, inserts)
        asked = spans[inserts.index(needle)]
        sample.spans = [asked] if asked is not None else []
        sample.fact_spans = [sp for sp in spans if sp is not None]
        return sample

    def babi_sample(self, rng: random.Random, n: int) -> Sample | None:
        """bAbI facts scattered through book text (BABILong); question at the end, one-word answer."""
        if not self.babi:
            return None
        room = n * self.S - len(self.prefix_ids) - 24
        for _ in range(10):
            q = rng.choice(self.babi)
            if sum(len(self.tok.encode(" " + f)) for f in q.facts) < 0.6 * room:
                break
        else:
            return None
        local = rng.random() < self.cfg.local and len(q.facts) <= 3
        doc = self._document(rng, n, list(q.facts), local, filler=False)
        if doc is None:
            return None
        # no draw at babi_form 0: old recipes replay the same samples
        form = self.cfg.babi_form > 0 and rng.random() < self.cfg.babi_form
        ask: Callable[[str], str] = question_text if form else (lambda text: text)
        sample = self._qa_sample("babi", doc, ask(q.question), q.answer, q.facts)
        spans = self._insert_spans(doc, q.facts)
        sample.fact_spans = [sp for sp in spans if sp is not None]
        movers = [(qa1_move(f) or ("", ""))[0] for f in q.facts]  # whose move each fact is ("" for no move)

        def moves_of(person: str) -> list[tuple[int, int]]:
            # a QA1 question's answer is the asked person's last move; their earlier moves are read too (the
            # delta rule overwrites them when their keys match): what the read must tell apart is the person
            return [sp for sp, who in zip(spans, movers, strict=True) if who == person and sp is not None]

        asked = q.question.removeprefix("Where is ").removesuffix("?")
        if all(movers) and asked in movers:  # a QA1 story
            sample.spans = moves_of(asked)
        where = (
            whereabouts(q.facts) if self.cfg.babi_questions > 1 else None
        )  # no draw at 1: old recipes replay
        if where:
            # the story's other people, each asked after the same document (the same memory): their last room
            asked = q.question.removeprefix("Where is ").removesuffix("?")
            others = [p for p in where if p != asked]
            rng.shuffle(others)
            for p in others[: self.cfg.babi_questions - 1]:
                other = self._qa_sample("babi", doc, ask(f"Where is {p}?"), where[p], q.facts)
                if other.segments == sample.segments:  # else an over-long question moved the segment cuts
                    sample.more.append((other.final, other.labels))
                    sample.more_spans.append(moves_of(p))
        return sample

    def lm(self, rng: random.Random, n: int) -> Sample | None:
        """Book text with next-token loss on every segment and on the tail of the final segment."""
        if not self.books:
            return None
        doc = self._document(rng, n, [], local=False, filler=False)
        if doc is None:
            return None
        name, text, doc_ids = doc
        segments, final = layout(self.prefix_ids, doc_ids, [], self.S)
        P = len(self.prefix_ids)
        seg_labels = []
        for j, seg in enumerate(segments):
            lab = seg[1:] + [IGNORE]
            if j == 0:  # the chat opener is not text to model
                lab[: P - 1] = [IGNORE] * (P - 1)
            seg_labels.append(lab)
        labels = [IGNORE] * (P - 1) + final[P:] + [IGNORE]  # position P-1 predicts the first tail token
        return Sample("lm", segments, seg_labels, final, labels, name, text)

    def sample(self, rng: random.Random, n: int, kind: str | None = None) -> Sample:
        """A sample with n segments in memory; kind drawn from the mixture weights when None."""
        kinds = list(self.weights)
        for _ in range(20):
            k = kind or rng.choices(kinds, weights=[self.weights[x] for x in kinds])[0]
            s = self._makers[k](rng, n)
            if s is not None:
                return s
        raise RuntimeError(f"cannot make a {kind or 'training'} sample with {n} segments of {self.S} tokens")

    def batch(self, rng: random.Random, n: int, size: int) -> Batch:
        return collate([self.sample(rng, n) for _ in range(size)], pad_id=0)


class DistillPool:
    """Short chat turns for the distillation term: fixed prompts and prompts around book passages.

    `items` are chat-prompt token ids (system + user turn + assistant opener); the loop appends the frozen
    base model's own answer to each once (`complete`) so the KL term covers answers, not only prompts.
    A share `fresh` of the inputs is instead a new book-passage prompt drawn at that moment (prompt only), so
    the term does not see the same few dozen inputs all run long."""

    def __init__(
        self,
        tok: Tokenizer,
        factory: SampleFactory,
        size: int,
        max_tokens: int,
        seed: int,
        fresh: float = 0.0,
    ):
        rng = random.Random(f"distill-{seed}")
        self.tok = tok
        self.factory = factory
        self.max_tokens = max_tokens
        self.fresh = fresh if factory.books else 0.0
        prompts = list(CHAT_PROMPTS)
        rng.shuffle(prompts)
        n_passages = max(0, size - len(prompts)) if factory.books else 0
        prompts = prompts[: max(1, size - n_passages)] if size > 0 else []
        prompts += [self._passage_prompt(rng) for _ in range(n_passages)]
        self.items: list[list[int]] = [self._chat_ids(p) for p in prompts]

    def _passage_prompt(self, rng: random.Random) -> str:
        passage = self.factory._haystack(rng, 80, filler=False)
        passage = passage[: self._chars_for(passage, rng.randint(self.max_tokens // 4, self.max_tokens // 2))]
        return rng.choice(PASSAGE_PROMPTS).format(p=passage.strip())

    def _chat_ids(self, prompt: str) -> list[int]:
        return self.tok.encode_with_specials(self.tok.chat_prompt([{"role": "user", "content": prompt}]))[
            : self.max_tokens
        ]

    def _chars_for(self, text: str, n_tokens: int) -> int:
        ids = self.tok.encode(text)[:n_tokens]
        return len(self.tok.decode(ids))

    def complete(self, responses: list[list[int]]) -> None:
        """Append the base model's answers (same order as items), within max_tokens."""
        self.items = [(a + r)[: self.max_tokens] for a, r in zip(self.items, responses, strict=True)]

    def batch(self, rng: random.Random, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, T] right-padded, mask [B, T] bool of real tokens)."""
        picks = [
            self._chat_ids(self._passage_prompt(rng)) if rng.random() < self.fresh else rng.choice(self.items)
            for _ in range(size)
        ]
        T = max(len(p) for p in picks)
        ids = torch.zeros(size, T, dtype=torch.long)
        mask = torch.zeros(size, T, dtype=torch.bool)
        for i, p in enumerate(picks):
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
            mask[i, : len(p)] = True
        return ids, mask


def segments_for_step(rng: random.Random, step: int, c) -> int:
    """Curriculum: segments per sample at `step` (uniform in a range that widens linearly to the end)."""
    f = min(1.0, step / c.ramp_steps) if c.ramp_steps > 0 else 1.0
    lo = round(c.start_min + f * (c.end_min - c.start_min))
    hi = round(c.start_max + f * (c.end_max - c.start_max))
    return rng.randint(lo, max(lo, hi))
