"""Synthetic twins of a release (issue 27)."""
