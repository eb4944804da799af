"""`python -m infinicli` runs the `infini` command line."""

from infinicli.cli import run

run()
