"""raylane's Kafka layer: the client factory, records, producer, offsets, dead letters, admin.

Everything in raylane that talks to Kafka goes through this package, so connection settings
are read in one place (:mod:`raylane.kafka.client`) and every loop shares the same commit,
dead-letter and topic code.
"""

from raylane.kafka.client import KafkaConnection, connection
from raylane.kafka.records import Headers, InRecord, OutRecord, header

__all__ = ["Headers", "InRecord", "KafkaConnection", "OutRecord", "connection", "header"]
