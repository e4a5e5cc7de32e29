"""Topic admin on the real broker: deleting a rig's topics frees them for good."""

from __future__ import annotations

import pytest

from raylane.kafka.admin import delete_topics_async, ensure_topics_async
from raylane.kafka.client import connection

pytestmark = pytest.mark.integration


async def _names(bootstrap: str) -> set[str]:
    admin = connection(bootstrap).admin()
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_delete_removes_only_the_named_topics_that_exist(kafka_bootstrap, unique):
    doomed, kept = f"admin.doomed.{unique}", f"admin.kept.{unique}"
    await ensure_topics_async(kafka_bootstrap, [doomed, kept], partitions=2)
    p = connection(kafka_bootstrap).producer(client_id="test-admin")
    await p.start()
    try:
        await p.send_and_wait(doomed, value=b"x")
    finally:
        await p.stop()

    deleted = await delete_topics_async(
        kafka_bootstrap, [doomed, f"admin.never-made.{unique}", doomed]
    )

    assert deleted == [doomed]
    names = await _names(kafka_bootstrap)
    assert doomed not in names
    assert kept in names
    assert await delete_topics_async(kafka_bootstrap, [doomed]) == []
