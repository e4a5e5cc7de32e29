"""Output sinks: one ``async write(records)`` interface (:class:`Sink`), one file per kind.

:data:`SINK_TYPES` maps a config ``type:`` to its implementation; a new sink is a new file
and one line in the table. The event archive (:mod:`raylane.sinks.archive`, read back with
:mod:`raylane.sinks.archive_read`, run over Kafka by :mod:`raylane.sinks.archive_loop`)
writes consumed records to Parquet.
"""

from raylane.sinks.archive import ArchiveSink
from raylane.sinks.base import Sink
from raylane.sinks.kafka import KafkaSink

__all__ = ["SINK_TYPES", "ArchiveSink", "KafkaSink", "Sink"]

#: ``type:`` -> sink class.
SINK_TYPES: dict[str, type] = {"archive": ArchiveSink, "kafka": KafkaSink}
