"""`python -m datafirst`: the same as the `datafirst` command."""

from .cli import entry

entry()
