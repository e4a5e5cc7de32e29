"""raylane.actions."""
