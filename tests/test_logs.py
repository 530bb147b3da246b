"""A peer's recent warnings and errors (logs.RecentRecords): bounded, newest first, counted per level."""

from __future__ import annotations

from pangea_p2p import logs


def test_the_ring_keeps_the_last_warnings_and_errors_newest_first_and_counts_them_all() -> None:
    ring = logs.RecentRecords(size=3)
    ring.attach()
    log = logs.get_logger("test.ring")
    try:
        log.info("test.ignored", n=0)
        for i in range(5):
            log.warning("test.odd", n=i)
        log.error("test.broken", detail="x" * 2000)
    finally:
        ring.detach()
    log.error("test.after_detach")
    records = ring.records()
    assert [(r["event"], r["fields"].get("n")) for r in records] == [
        ("test.broken", None), ("test.odd", "4"), ("test.odd", "3")]
    assert records[0]["level"] == "error"
    assert records[0]["logger"] == "pangea.test.ring"
    assert len(records[0]["fields"]["detail"]) == logs.RecentRecords.FIELD_CHARS_MAX
    assert ring.counts == {"warning": 5, "error": 1}
