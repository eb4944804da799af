"""The bAbI split shared by training and the BABILong-style benchmark.

The corpus holds only bAbI's train files, so one story in five (by its position in the file) is held out:
`infini train` never sees those stories and `infini bench babilong` asks only about them.
"""

from __future__ import annotations

HELD_OUT_EVERY = 5


def held_out(story: int) -> bool:
    """True for the stories (0-based index in their file) reserved for the benchmark."""
    return story % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
