"""Release: de-identified, documented, versioned research products."""
