"""Benchmarks of the Infini-attention retrofit, UI-free (no typer, no rich): the CLI wraps them.

* ``passkey``  -- the pass-key retrieval task of the Infini-attention paper (Landmark-attention template).
* ``babilong`` -- bAbI facts scattered through book text (BABILong style), answered from memory.
* ``ppl``      -- perplexity of a book with memory, without memory, and with a two-segment sliding window.

Every benchmark asks through the product path (``Engine.final_segment`` + ``Engine.question_tokens``), so a
number here is what ``infini ask`` would get. ``common`` holds length parsing, tables, JSON and timing.
"""
