"""Run ids (and Celery task ids): random UUIDs in canonical text, formatted without uuid.UUID."""

from __future__ import annotations


def test_run_ids_are_version_4_uuids_in_canonical_form() -> None:
    import uuid

    from scheduler.core.values import new_run_id

    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
