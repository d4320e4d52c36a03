"""Standardise: clean identifiers per role and split identifiers from content."""
