"""The `infini` command line: one module per command group, `main()` maps known errors to exit codes.

Answers go to stdout; progress, notices and errors go to stderr. Heavy modules (torch, transformers) are
imported only inside the commands that need them, so `infini --help` stays instant.
"""

from __future__ import annotations

import os
import sys

import typer

from infinicli import __version__
from infinicli.errors import EXIT_INTERRUPTED, InfiniError

app = typer.Typer(
    name="infini",
    help="Read arbitrarily long documents through an Infini-attention language model and ask about them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"infini {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """infini: ask questions about documents of any length (exit codes: see README)."""


from infinicli.cli import ask as _ask  # noqa: E402  (registers commands)
from infinicli.cli import bench as _bench  # noqa: E402, F401
from infinicli.cli import models as _models  # noqa: E402
from infinicli.cli import train as _train  # noqa: E402

_ = (_ask, _models, _train)


def _err(msg: str) -> None:
    sys.stderr.write(f"infini: error: {msg}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn known failures into one line on stderr and a documented exit code."""
    import click

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rv = app(args=argv, prog_name="infini", standalone_mode=False)
        # typer returns the exit code (130 after Ctrl-C, typer.Exit codes) instead of raising
        return rv if isinstance(rv, int) else 0
    except InfiniError as e:
        _err(str(e))
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        _err(e.format_message().replace("\n", " "))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except MemoryError:
        _err("out of memory")
        return 5
    except Exception as e:  # a bug: one line, the traceback only on request
        if os.environ.get("INFINI_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {e} (set INFINI_DEBUG=1 for the traceback)")
        return 1


def run() -> None:
    """The `infini` command: main(), then leave at once. Everything the command writes is flushed and
    closed by then, so the interpreter's own teardown (over 0.3 s of freeing torch and its modules) is
    skipped; that is most of the start-to-end time left for a follow-up question."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
    os._exit(code)
