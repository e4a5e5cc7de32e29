"""The batch core: ports, the batch processor and its stages, decision rules, breakers, wiring.

Pure Python over the ports in :mod:`raylane.pipeline.ports`; unit-tested with in-memory
fakes (:mod:`raylane.testing.fakes`). A new stage is a new module here, called from
:class:`BatchProcessor`; a new feature source implements a port.
"""

from raylane.pipeline.decision import DecisionEngine, Decisions
from raylane.pipeline.local_model import LocalModelClient
from raylane.pipeline.ports import (
    BatchCodec,
    ModelClient,
    OnlineSource,
    OutputCodec,
    Prediction,
    ShadowJob,
    WindowSource,
)
from raylane.pipeline.processor import BatchProcessor, BatchResult, is_outage
from raylane.pipeline.wiring import build_processor, codecs_for

__all__ = [
    "BatchCodec",
    "BatchProcessor",
    "BatchResult",
    "DecisionEngine",
    "Decisions",
    "LocalModelClient",
    "ModelClient",
    "OnlineSource",
    "OutputCodec",
    "Prediction",
    "ShadowJob",
    "WindowSource",
    "build_processor",
    "codecs_for",
    "is_outage",
]
