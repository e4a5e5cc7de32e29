"""Output sinks: one ``async write(records)`` interface (:class:`Sink`), one file per kind.

:data:`SINK_TYPES` maps a config ``type:`` to its implementation; a new sink is a new file
and one line in the table.
"""

from raylane.sinks.base import Sink
from raylane.sinks.kafka import KafkaSink

__all__ = ["SINK_TYPES", "KafkaSink", "Sink"]

#: ``type:`` -> sink class.
SINK_TYPES: dict[str, type] = {"kafka": KafkaSink}
