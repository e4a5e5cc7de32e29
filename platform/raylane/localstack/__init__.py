"""raylane.localstack."""
