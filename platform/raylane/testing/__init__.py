"""raylane.testing."""
