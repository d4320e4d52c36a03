"""Synthetic twins of a release (docs/synth.md): the same tables, columns, types, code lists and
joins, with new ids and generated rows, so that researchers can write code before access.

`structure` reads a release's key structure, `models` fits and draws the column models,
`generate` makes the twin's rows in the engine, and `stage` writes the twin's folder.
"""

from .models import SynthError
from .stage import FIDELITIES, Twin, synthesise

__all__ = ["FIDELITIES", "SynthError", "Twin", "synthesise"]
