"""The bAbI data shared by training and the BABILong-style benchmark: the file parser, the question form,
and the split.

The corpus holds only bAbI's train files, so one story in five (by its position in the file) is held out:
`infini train` never sees those stories and `infini bench babilong` asks only about them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

HELD_OUT_EVERY = 5

# What is asked after the document. Plain on purpose: with BABILong's longer task instructions the 135M base
# model describes "the text above" instead of answering (measured on facts-only inputs).
QUESTION_FORM = "Question: {question}\nAnswer with one word."


def held_out(story: int) -> bool:
    """True for the stories (0-based index in their file) reserved for the benchmark."""
    return story % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


# a QA1 fact: "Mary moved to the bathroom.", "Daniel went back to the hallway."
_QA1_MOVE = re.compile(r"^([A-Z][a-z]+) (?:moved|went|went back|journeyed|travelled) to the ([a-z]+)\.$")


def qa1_move(fact: str) -> tuple[str, str] | None:
    """(person, room) of a QA1 fact sentence; None for any other sentence."""
    m = _QA1_MOVE.match(fact.strip())
    return (m.group(1), m.group(2)) if m else None


def whereabouts(facts: Sequence[str]) -> dict[str, str] | None:
    """Where each person of a QA1 story is after its facts (person → room, in order of first mention);
    None when a fact is not a QA1 move (another task)."""
    where: dict[str, str] = {}
    for f in facts:
        move = qa1_move(f)
        if move is None:
            return None
        where[move[0]] = move[1]
    return where


def question_text(question: str) -> str:
    """The bAbI question as the benchmark asks it (QUESTION_FORM)."""
    return QUESTION_FORM.format(question=question)


@dataclass
class BabiSample:
    """One question of a bAbI story, with everything the story said before it."""

    story: int  # index of the story in the file
    facts: list[str]  # the story's fact sentences before the question, in order
    question: str
    answer: str
    supporting: list[int]  # line numbers of the supporting facts (as in the file)
    fact_lines: list[int]  # the line number of each fact (as in the file)

    def facts_from_support(self) -> list[str]:
        """The facts from the earliest supporting one on (all of them when none is named)."""
        first = min(self.supporting) if self.supporting else 0
        return [f for f, n in zip(self.facts, self.fact_lines, strict=True) if n >= first]


_LINE = re.compile(r"^(\d+) (.*)$")
_PIPE_Q = re.compile(r"^(.*?\?)\s*\|([^|]*)\|\s*([\d ]*)\s*$")


def parse_babi(text: str) -> list[BabiSample]:
    """Samples of a bAbI file. Lines are "N sentence"; question lines are "N question<TAB>answer<TAB>ids"
    (or "N question |answer|ids" as in some copies); N restarts at 1 with every story."""
    out: list[BabiSample] = []
    facts: list[str] = []
    lines: list[int] = []
    story = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"not a bAbI line: {raw!r}")
        num, rest = int(m.group(1)), m.group(2)
        if num == 1:
            story += 1
            facts, lines = [], []
        q: tuple[str, str, str] | None = None
        if "\t" in rest:
            parts = rest.split("\t")
            q = (parts[0], parts[1], parts[2] if len(parts) > 2 else "")
        else:
            pm = _PIPE_Q.match(rest)
            if pm:
                q = (pm.group(1), pm.group(2), pm.group(3))
        if q is None:
            facts.append(rest.strip())
            lines.append(num)
        else:
            sup = [int(x) for x in q[2].split()]
            out.append(BabiSample(story, list(facts), q[0].strip(), q[1].strip(), sup, list(lines)))
    return out
