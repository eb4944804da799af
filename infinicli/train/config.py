"""Training configuration: a TOML recipe (default.toml beside this file) plus `section.key=value` overrides.

The recipe has six sections: [model] (what is retrofitted and what trains), [data] (the sample mixture),
[curriculum] (segments per sample over time), [optim] (AdamW groups, schedule, batch), [loss] (weights of the
answer, language-modelling and distillation terms) and [run] (steps, folder, device, checkpoints, seed).
Unknown keys are errors, so a typo in a recipe or a `--set` never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    try:
        import tomli as tomllib
    except ImportError:  # pragma: no cover - only without tomli on 3.10
        tomllib = None  # type: ignore[assignment]

DEFAULT_RECIPE = Path(__file__).with_name("default.toml")
CONFIG_NAME = "config.toml"  # the recipe as run, in every run folder
HELD_OUT_BOOKS = ("anna_karenina.txt",)  # the perplexity benchmark's text: never trained on
READ_KINDS = ("passkey", "recall", "babi")  # the sample kinds that name their answering sentences (loss.read)
READ_HEADS = ("mean", "max")  # how loss.read combines the query heads' shares
READ_AGAINST = ("memory", "facts")  # what loss.read's share is of: the whole memory read, or the facts' part


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema."""


@dataclass
class ModelSection:
    model: str = ""  # "" = the default model (infinicli.models.resolve_model)
    init_adapter: str = "none"  # start from an adapter file ("none": fresh gates at gate_init, fresh LoRA)
    # another adapter file of init_adapter's lineage: the run starts from their average, init_average_weight ·
    # init_adapter + (1 − init_average_weight) · this (loading.average_adapters: LoRA updates mixed exactly,
    # ranks summed), written to <run.out>/init_adapter.safetensors. "none": init_adapter alone.
    init_average_with: str = "none"
    init_average_weight: float = 0.5
    segment_len: int = 256
    update_rule: str = "delta"  # "delta" (eq. 5) or "linear" (eq. 4)
    gate_init: float = -1.0  # β at initialisation (eq. 6); -3 does not learn, about -1 does
    train: str = "lora"  # "lora" | "full" (all q/k/v/o weights) | "gates" (gates only)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # "all": LoRA changes the projections (local attention too); "memory": LoRA only on the memory path, so
    # with an empty memory the model is the base model exactly (chat kept by construction, no KL term needed)
    lora_scope: str = "all"
    # with scope "memory" (the run's or init_adapter's): layers whose q/k/v/o also get LoRA on the local path,
    # rank lora_local_rank (model.InfiniConfig.lora_local_layers), at the deltas' scale α/r. Added, at B = 0,
    # to an init_adapter without them. They change the model with an empty memory: keep loss.distill on
    lora_local_layers: list[int] = field(default_factory=list)
    lora_local_rank: int = 8
    # > 0: a causal convolution over this many positions on the memory keys (trained with the LoRA; see
    # model.InfiniConfig.key_conv). Added to an init_adapter that has none.
    key_conv: int = 0
    # > 0: layers below this one stay frozen (gates and LoRA included) and run without autograd, so the
    # backward pass and its recomputation cover only the layers above: cheaper steps on a CPU
    train_from_layer: int = 0
    # > 0: the delta-rule write of each segment goes in chunks of this many tokens (model.InfiniConfig.
    # write_chunk); 0: one write per segment, as in the paper. Recorded in the adapter.
    write_chunk: int = 0
    # True: a memory sharpness per layer and KV head (model.InfiniConfig.mem_scale), trained with the gates
    # (their learning rate, no weight decay). Added, at 0 (no sharpening), to an init_adapter that has none.
    mem_scale: bool = False
    # "LAYERS=A" (e.g. "22,23=2"): where the sharpness is added, those layers start at s = ln A instead of 0
    mem_scale_init: str = ""
    # True: a query gate per layer, sigmoid(β + w·q/√d) per token (model.InfiniConfig.gate_query), w trained
    # with the gates (their learning rate, no weight decay). Added, at w = 0, to an init_adapter without one.
    gate_query: bool = False
    # True: the gate also weighs the two reads, + (v·A_mem + u·A_dot)/√d (model.InfiniConfig.gate_content),
    # v and u trained with the gates. Added, at 0, to an init_adapter without them.
    gate_content: bool = False


@dataclass
class DataSection:
    corpus: str = ""  # "" = $INFINI_CORPUS or <repo>/../shared/corpus
    passkey: float = 0.5  # mixture weights (normalised)
    babi: float = 0.2
    lm: float = 0.3
    recall: float = 0.0  # long digit / word sequences asked back whole (many ordered retrievals per sample)
    books: list[str] = field(
        default_factory=lambda: ["books/war_and_peace.txt", "books/tiny_shakespeare.txt"]
    )
    babi_tasks: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    # which facts a bAbI sample hides: "support" = from the earliest supporting fact on (stages 1-8: a QA1
    # person then moves only once), "story" = every fact of the story before the question, earlier moves of
    # the same person included (as BABILong and `infini bench babilong` ask)
    babi_context: str = "support"
    babi_form: float = 0.0  # share of bAbI questions in the benchmark's form (infinicli.babi.QUESTION_FORM)
    filler_haystack: float = 0.4  # share of passkey haystacks made of repeated filler (rest: book text)
    second_needle: float = 0.3  # probability of a distracting second needle of another kind
    local: float = 0.05  # probability that the needle / facts sit in the final segment, not in memory
    # probability that a passkey / recall needle sits in the first segment, the one written while the memory
    # is empty (uniform depths put only 1 in n there, and that segment is where readout loses the order)
    first_segment: float = 0.0
    # > 1: a QA1 sample also asks where up to this many - 1 other people of its story are, each question a
    # final segment of its own that reads the same memory (more supervision per memory written, and the
    # people must be told apart); 1: only the story's own question
    babi_questions: int = 1
    min_tail: int = 8  # fewest document tokens left for the final segment


@dataclass
class CurriculumSection:
    start_min: int = 2  # segments written to memory per sample at step 0: uniform in [start_min, start_max]
    start_max: int = 4
    end_min: int = 2  # ... and from ramp_steps on: uniform in [end_min, end_max]
    end_max: int = 16
    ramp_steps: int = 1000  # linear growth in between
    ramp_fraction: float = 0.0  # > 0: ramp_steps = this share of run.steps (set once steps are known)


@dataclass
class OptimSection:
    lr: float = 3e-3  # LoRA (or full projections: use ~1e-5)
    gate_lr: float = 0.1  # gates β: their own group, never weight-decayed
    conv_lr: float = 0.0  # > 0: the memory key convolution's taps in their own group at this rate, no decay
    weight_decay: float = 0.0  # LoRA / projections only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 20
    schedule: str = "cosine"  # "constant" or "cosine" (to min_lr_ratio at the last step)
    min_lr_ratio: float = 0.1
    batch_size: int = 1  # samples per forward (all with the same number of segments)
    grad_accum: int = 2  # forwards per optimizer step
    grad_clip: float = 1.0  # max global grad norm (0 = off)


@dataclass
class LossSection:
    answer: float = 1.0  # CE on the answer tokens of the final segment
    lm: float = 1.0  # next-token CE on every segment of LM samples (memory carried)
    distill: float = 1.0  # KL(base || model) on short chat inputs (the base model: empty memory)
    distill_prob: float = 0.5  # share of forwards that add a distillation batch
    distill_max_tokens: int = 192
    distill_response_tokens: int = 40  # base-model answer appended to each fixed chat prompt (0 = none)
    distill_pool: int = 24  # chat inputs prepared once per run (fixed prompts + book-passage prompts)
    distill_fresh: float = 0.5  # share of distillation inputs that are new book-passage prompts (no answer)
    # False: the model reads the chat inputs with an empty memory too (then only LoRA of scope "all" can make
    # it differ from the base model: with scope "memory" the term is exactly 0). True: the model reads them
    # with the memory the sample of the same forward left (text unrelated to the chat input), so the term
    # teaches that a memory holding nothing relevant must not change the answers to what is read locally
    distill_memory: bool = False
    # > 0: a read loss at the answer position, this weight times −log of the share of the memory read
    # (eq. 3's weights σ(q)·σ(k_t) / σ(q)·z, mean over query heads) that falls on the sentences which answer
    # the question (a pass key's needle; a QA1 question's moves of the asked person), in each layer of
    # read_layers: it teaches keys to say what a sentence is about and queries to ask for it
    read: float = 0.0
    read_layers: list[int] = field(default_factory=lambda: [23])
    # the sample kinds whose questions the read loss supervises (of those that name answering sentences)
    read_kinds: list[str] = field(default_factory=lambda: list(READ_KINDS))
    # how the query heads' shares combine: "mean" (every head pushed onto the answering sentences alike) or
    # "max" (only the head that already reads them most: the others keep what they read)
    read_heads: str = "mean"
    # what the share is of: "memory" (the whole read, σ(q)·z: most of it is the haystack, so the share rises
    # when the facts are read more than the text around them) or "facts" (only the part on the sentences
    # hidden in the document, σ(q)·Σ_facts σ(k_t): the share rises only when the asked person's moves are
    # read more than the other people's, or the asked needle more than a second one)
    read_against: str = "memory"


@dataclass
class RunSection:
    steps: int = 1500
    out: str = "runs/infini"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    bf16: bool = True  # bf16 base weights / autocast where bf16 is native (gates, LoRA, memory stay fp32)
    grad_checkpoint: bool = True  # recompute each segment in backward (memory grows with segments otherwise)
    checkpoint_every: int = 50  # steps between resumable checkpoints (0 = only at the end)
    log_every: int = 1
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)
    time_budget_s: float = 0.0  # > 0: time a few passes first, then set steps to fill this many seconds


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        for section, values in d.items():
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table")
            for key, value in values.items():
                set_value(cfg, f"{section}.{key}", value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        m, c, o, d = self.model, self.curriculum, self.optim, self.data
        if m.train not in ("lora", "full", "gates"):
            raise ConfigError(f"model.train = {m.train!r}: use 'lora', 'full' or 'gates'")
        if m.train == "lora" and m.lora_rank <= 0:
            raise ConfigError("model.train = 'lora' needs model.lora_rank > 0")
        if m.init_average_with not in ("", "none"):
            if m.init_adapter in ("", "none"):
                raise ConfigError("model.init_average_with needs model.init_adapter (the other adapter)")
            if not 0.0 < m.init_average_weight < 1.0:
                w = m.init_average_weight
                raise ConfigError(f"model.init_average_weight = {w}: use a number between 0 and 1")
        if not 0 <= m.key_conv <= 16:
            raise ConfigError(f"model.key_conv = {m.key_conv}: use 0 (none) to 16 positions")
        if m.mem_scale_init:
            from infinicli.model import parse_sharpen

            try:
                parse_sharpen(m.mem_scale_init, 10_000)  # the format; the layer count is the model's
            except ValueError as e:
                raise ConfigError(f"model.mem_scale_init = {e}") from None
            if not m.mem_scale:
                raise ConfigError("model.mem_scale_init needs model.mem_scale = true")
        if m.write_chunk < 0:
            raise ConfigError(f"model.write_chunk = {m.write_chunk}: use 0 (whole segment) or a token count")
        if m.train_from_layer < 0:
            raise ConfigError(f"model.train_from_layer = {m.train_from_layer}: use 0 (all train) or more")
        if m.lora_scope not in ("all", "memory"):
            raise ConfigError(f"model.lora_scope = {m.lora_scope!r}: use 'all' or 'memory'")
        if m.lora_local_layers:
            if m.train != "lora" or m.lora_local_rank <= 0:
                raise ConfigError("model.lora_local_layers needs model.train = 'lora', lora_local_rank > 0")
            if min(m.lora_local_layers) < m.train_from_layer:
                raise ConfigError(
                    f"model.lora_local_layers = {m.lora_local_layers}: below model.train_from_layer = "
                    f"{m.train_from_layer} they would stay frozen at zero"
                )
        if m.update_rule not in ("delta", "linear"):
            raise ConfigError(f"model.update_rule = {m.update_rule!r}: use 'delta' or 'linear'")
        if m.segment_len < 16:
            raise ConfigError("model.segment_len must be at least 16")
        if not (1 <= c.start_min <= c.start_max and 1 <= c.end_min <= c.end_max):
            raise ConfigError("curriculum: need 1 <= start_min <= start_max and 1 <= end_min <= end_max")
        if o.batch_size < 1 or o.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be >= 1")
        if o.conv_lr < 0:
            raise ConfigError(f"optim.conv_lr = {o.conv_lr}: use 0 (the LoRA rate) or a positive rate")
        if o.schedule not in ("constant", "cosine"):
            raise ConfigError(f"optim.schedule = {o.schedule!r}: use 'constant' or 'cosine'")
        weights = (d.passkey, d.recall, d.babi, d.lm)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError("data: mixture weights must be >= 0 and not all zero")
        probs = ("filler_haystack", "second_needle", "local", "first_segment", "babi_form")
        if not all(0.0 <= getattr(d, k) <= 1.0 for k in probs):
            raise ConfigError(f"data: {', '.join(probs)} must be in [0, 1]")
        if d.babi_questions < 1:
            raise ConfigError(
                f"data.babi_questions = {d.babi_questions}: use 1 (only the story's question) or more"
            )
        if d.babi_context not in ("support", "story"):
            raise ConfigError(f"data.babi_context = {d.babi_context!r}: use 'support' or 'story'")
        for b in d.books:
            if Path(b).name in HELD_OUT_BOOKS:
                raise ConfigError(f"data.books: {b} is held out for the perplexity benchmark")
        lo = self.loss
        if lo.read < 0 or (lo.read > 0 and not lo.read_layers):
            raise ConfigError("loss.read must be >= 0, and > 0 needs loss.read_layers")
        if not set(lo.read_kinds) <= set(READ_KINDS):
            raise ConfigError(f"loss.read_kinds must be among {', '.join(READ_KINDS)}")
        if lo.read_heads not in READ_HEADS:
            raise ConfigError(f"loss.read_heads = {lo.read_heads!r}: must be one of {', '.join(READ_HEADS)}")
        if lo.read_against not in READ_AGAINST:
            choices = ", ".join(READ_AGAINST)
            raise ConfigError(f"loss.read_against = {lo.read_against!r}: must be one of {choices}")
        if lo.read > 0 and any(not (m.train_from_layer <= i) for i in lo.read_layers):
            raise ConfigError("loss.read_layers must be trained layers (>= model.train_from_layer)")
        if self.run.steps < 0:
            raise ConfigError("run.steps must be >= 0")
        if self.run.time_budget_s < 0 or not (0.0 <= c.ramp_fraction <= 1.0):
            raise ConfigError("run.time_budget_s must be >= 0 and curriculum.ramp_fraction in [0, 1]")


def _parse_scalar(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (numbers, booleans, lists, quoted strings), else text."""
    if tomllib is not None:
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_value(cfg: TrainConfig, dotted: str, value: Any) -> None:
    """Set `section.key` to value, converted to the field's type (a string value is parsed first)."""
    section, _, key = dotted.partition(".")
    if not key or not hasattr(cfg, section) or section.startswith("_"):
        raise ConfigError(f"unknown setting {dotted!r} (use section.key, e.g. optim.lr)")
    sec = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(sec)}
    if key not in fields:
        raise ConfigError(f"unknown setting {dotted!r}; [{section}] has: {', '.join(sorted(fields))}")
    current = getattr(sec, key)
    if isinstance(value, str) and not isinstance(current, str):
        value = _parse_scalar(value)
    try:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise TypeError
        elif isinstance(current, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            value = int(value)
        elif isinstance(current, float):
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        elif isinstance(current, list):
            if not isinstance(value, list):
                value = [value]
        elif isinstance(current, str):
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{dotted} = {value!r}: expected {type(current).__name__}") from None
    setattr(sec, key, value)


def parse_override(text: str) -> tuple[str, str]:
    """`section.key=value` -> (section.key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    return key.strip(), value.strip()


def read_toml(path: Path) -> dict[str, Any]:
    if tomllib is None:
        raise ConfigError("reading TOML on Python 3.10 needs the 'tomli' package (pip install tomli)")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path}: {e}") from None


def load_config(
    path: Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict | None = None
) -> TrainConfig:
    """The recipe at `path` (default.toml when None; `base`, a saved config dict, instead when given) with
    the `section.key=value` overrides applied in order."""
    d = base if base is not None else read_toml(Path(path) if path else DEFAULT_RECIPE)
    cfg = TrainConfig.from_dict(d)
    for ov in overrides:
        set_value(cfg, *parse_override(ov))
    cfg.validate()
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def to_toml(cfg: TrainConfig) -> str:
    """The config as a TOML recipe (written into every run folder, reusable with --config)."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)
