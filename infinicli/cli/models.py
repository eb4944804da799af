"""`infini models list | pull`: the local model store."""

from __future__ import annotations

import json
import sys

import typer

from infinicli.cli import app
from infinicli.cli.display import Display, human_bytes

models_app = typer.Typer(
    help="Manage the local models (pulled once, then used offline).", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the known and present models."""
    from infinicli.models import list_models

    rows = list_models()
    if json_out:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    for r in rows:
        state = "present" if r.get("present") else "not pulled"
        size = human_bytes(r["size_bytes"]) if r.get("size_bytes") else ""
        sys.stdout.write(
            f"{r['name']:<24} {state:<11} {size:>9}  {r.get('description') or r.get('path') or ''}\n"
        )


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument("smollm2-135m", help="Model name."),
    force: bool = typer.Option(False, "--force", help="Download and convert again."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download and convert a model once (later runs are offline)."""
    from infinicli.models import pull

    display = Display(quiet)
    path = pull(name, progress=display.stage, force=force)
    sys.stdout.write(f"{path}\n")
