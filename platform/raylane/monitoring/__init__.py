"""raylane.monitoring."""
