"""Synthetic twins of a release (issue 27): structure, generation, constraints, report, privacy."""
