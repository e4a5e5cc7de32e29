"""raylane.ingest."""
