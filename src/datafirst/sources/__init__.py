"""Sources: contracts per source system, and ingest into the landed zone."""
