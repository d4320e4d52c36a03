"""Synthetic twins of a release (docs/synth.md): the same tables, columns, types, code lists and
joins, with new ids and generated rows, so that researchers can write code before access.

`structure` reads a release's key structure, `models` fits and draws the column models,
`generate` makes the twin's rows in the engine, and `stage` writes the twin's folder; `report`
(from the measures of `metrics`) says how useful and how private it is; `constraints` and
`queries` check the release's declared constraints and run its research queries on both.

Nothing is imported here: the release stage reads `constraints` and `queries` to publish them,
and `stage` reads the release's modules, so importing `stage` here would make a cycle.
"""
