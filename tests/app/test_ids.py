"""File ids: valid UUIDs in the version 7 layout, unique, with the creation time first."""

from __future__ import annotations

import time
import uuid

from app.models import time_ordered_ids


def test_time_ordered_ids_are_unique_version_7_uuids_led_by_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = time_ordered_ids(10_000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids) == 10_000
    for text in ids[:100]:
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
    # Two batches made later sort after the earlier one: inserts append to the index.
    time.sleep(0.002)
    assert min(time_ordered_ids(100)) > max(ids)
    assert time_ordered_ids(0) == []
