"""datafirst: linked, de-identified, documented, research-ready justice data products."""

__version__ = "0.1.0"
