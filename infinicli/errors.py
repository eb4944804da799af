"""Known failures and their exit codes; the CLI turns each into one line on stderr.

Exit codes (documented in README.md):
    0   success
    1   unexpected internal error (a bug: please report it)
    2   usage error (bad option, empty question, ...)
    3   unreadable input (missing file, encrypted PDF without password, damaged memory file, ...)
    4   model failure (unknown model, folder without weights, model pull failed)
    5   resource failure (disk full, read-only folder, out of memory)
    130 interrupted (Ctrl-C); the reading so far is checkpointed
"""

from __future__ import annotations


class InfiniError(Exception):
    """Base class of errors that end the command with one line and a known exit code."""

    exit_code = 1


class UsageError(InfiniError):
    exit_code = 2


class InputError(InfiniError):
    exit_code = 3


class ModelError(InfiniError):
    exit_code = 4


class ResourceError(InfiniError):
    exit_code = 5


EXIT_INTERRUPTED = 130
