"""The ingress: the consumer loop that feeds the batch core (batching, pause/retry, commit)."""

from raylane.ingest.build import build_ingress
from raylane.ingest.consumer import IngressLoop, IngressStats

__all__ = ["IngressLoop", "IngressStats", "build_ingress"]
