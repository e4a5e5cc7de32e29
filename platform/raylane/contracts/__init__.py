"""raylane.contracts."""
