"""raylane.registry."""
