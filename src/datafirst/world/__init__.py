"""The synthetic justice world: raw extracts with realistic errors, and the hidden truth.

It stands beside the pipeline, not inside it: no pipeline stage imports this package.
"""

from .generate import WorldError, WorldSummary, generate_world

__all__ = ["WorldError", "WorldSummary", "generate_world"]
