"""raylane: a real-time inference and feature platform on Ray.

Events arrive on Kafka, are validated against versioned contracts, enriched with
online and streaming window features, scored by a primary and shadow models in
Ray Serve, and published back to Kafka as action events.
"""

__version__ = "0.1.0"
