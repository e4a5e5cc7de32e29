"""The test-session stack: reuse a healthy stack, else start one, and stop only what we started.

Engineers share one checkout (and so one ``.raylane/``), and their test sessions overlap.
Each session takes a lease (``sessions/<pid>-<id>``); components a session starts are marked
non-persistent, and whichever session leaves last stops them. A stack from
``raylane dev up`` is persistent: sessions reuse it and never stop it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from raylane.settings import Settings, raylane_home

from ._stack import export_fallbacks, stop_recorded, up_locked
from ._state import add_lease, live_leases, remove_lease, stack_lock

__all__ = ["session_stack"]


@contextlib.contextmanager
def session_stack(components: Iterable[str] | None = None) -> Iterator[Settings]:
    """Settings of a running stack for the duration of a test session.

    Honours ``RAYLANE_KAFKA_BOOTSTRAP`` / ``REDIS_URL`` / ``MLFLOW_TRACKING_URI`` like
    ``raylane dev up``. On exit, if no other session holds a lease, stops the processes
    that test sessions started and forgets what they recorded; what ``raylane dev up``
    started or recorded is left alone, and external services are never stopped.
    """
    home = raylane_home()
    pid = os.getpid()
    with stack_lock(home):
        lease = add_lease(home, pid)
    try:
        settings, _started = up_locked(components, persistent=False)
        export_fallbacks(settings)
        yield settings
    finally:
        with stack_lock(home):
            remove_lease(home, lease)
            if not live_leases(home):
                stop_recorded(home, only=lambda rec: not rec.persistent)
