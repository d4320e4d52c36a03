"""`python -m datafirst`: the same as the `datafirst` command."""

from .cli import app

app(prog_name="datafirst")
