"""raylane.serving."""
