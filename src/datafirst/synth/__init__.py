"""Synthetic twins of a release: tables that behave like the release's, made so that researchers can
write and test code before they have access to the real data, with a report of their utility and
privacy (report.py, from the measures of metrics.py), and the release's declared constraints and
research queries checked on both (constraints.py, queries.py)."""
