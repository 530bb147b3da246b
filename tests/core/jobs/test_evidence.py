"""Evidence pages (core/jobs/evidence.py): what one page holds, how pages follow each other, and that a malformed
page is a RemoteProtocolError naming what is wrong."""

from __future__ import annotations

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.jobs.evidence import TaskEvidence, decode_page, encode_page
from pangea_p2p.errors import RemoteProtocolError

JOB = {"job_id": "j", "state": "done", "issuer": "12D3KooWIssuer", "module_cid": "bafymodule",
       "verification": "hash", "ignored": "not a job field"}


def task(i: int) -> TaskEvidence:
    return TaskEvidence({"task_id": f"j/t{i}"}, b"tree%d" % i, b"x" * 100, b"in%d" % i)


def pages(count: int, **bounds: int) -> list[list[int]]:
    """The task indexes of each page, following ``next`` from the first page."""
    out: list[list[int]] = []
    start: int | None = 0
    while start is not None:
        page = decode_page(encode_page(JOB, count, task, start, **bounds))
        assert page.tasks == [task(i) for i in range(page.start, page.start + len(page.tasks))]
        out.append(list(range(page.start, page.start + len(page.tasks))))
        start = page.next
    return out


def test_a_page_round_trips_the_job_fields_and_every_part() -> None:
    page = decode_page(encode_page(JOB, 3, task, 1))
    assert page.job == {k: v for k, v in JOB.items() if k != "ignored"}
    assert (page.start, page.next, page.tasks) == (1, None, [task(1), task(2)])


def test_pages_are_bounded_by_bytes_and_tasks_and_hold_one_task_at_least() -> None:
    assert pages(5) == [[0, 1, 2, 3, 4]]
    assert pages(5, tasks_max=2) == [[0, 1], [2, 3], [4]]
    assert pages(5, bytes_max=250) == [[0, 1, 2], [3, 4]]  # a task adds ~110 bytes: stop once past 250
    assert pages(3, bytes_max=1) == [[0], [1], [2]]
    assert pages(0) == [[]]


def test_a_start_outside_the_job_is_refused() -> None:
    with pytest.raises(ValueError, match=r"start 4 is not in 0\.\.3"):
        encode_page(JOB, 3, task, 4)


@pytest.mark.parametrize(("data", "match"), [
    (b"", "shorter than its 4-byte count"),
    (frame_chunks([b"\xff"]), "header is not a JSON object"),
    (frame_chunks([b"[]"]), "header is not a JSON object"),
    (frame_chunks([b'{"tasks": [{}], "start": 0, "next": null}', b"", b""]), "1 task\\(s\\) but 2 parts"),
    (frame_chunks([b'{"tasks": [], "start": 2, "next": 2}']), "do not advance"),
    (frame_chunks([b'{"tasks": [], "start": true, "next": null}']), "do not advance"),
    (frame_chunks([b'{"tasks": [], "start": -1, "next": null}']), "do not advance"),
])
def test_a_malformed_page_is_named(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_page(data)
