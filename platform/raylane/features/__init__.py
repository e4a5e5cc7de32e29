"""raylane.features."""
