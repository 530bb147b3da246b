"""A job's evidence, in pages: everything an offline verifier needs, in one HTTP answer per page.

``GET /v1/jobs/{id}/evidence?start=I&inputs=1`` answers one page (``pangea_p2p.sdk.verify.verify_job`` reads
them all): the job's fields, and for each task from ``I`` on its binding fields, its signed receipt tree, its
framed output and (with ``inputs``) its framed input, until the page holds ``PAGE_BYTES_MAX`` bytes or
``PAGE_TASKS_MAX`` tasks (at least one task). The peer is not trusted: the verifier checks every receipt, content
id and input chunk itself. One request per page instead of one per task and per chunk is what makes verifying a
job cost a fraction of running it.

A page is a framed chunk list (``core.chunks``): first a JSON header
``{"job_id", "state", "issuer", "module_cid", "verification", "start", "next", "tasks": [task, ...]}`` (``next``:
the start of the following page, null after the last), then three chunks per task, in order: its receipt tree,
its framed output, its framed input (each empty when the task has none or it was not asked for).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.errors import RemoteProtocolError

PAGE_BYTES_MAX = 16 << 20
PAGE_TASKS_MAX = 10_000
JOB_FIELDS = ("job_id", "state", "issuer", "module_cid", "verification")


@dataclass(frozen=True, slots=True)
class TaskEvidence:
    """One task of a page: its fields as the peer states them (``task_id``, ``input_cid``, ``chunk_count``,
    ``chunk_cids``, ``limits``, ``worker``, ``output_cid``, ``checked``, ``unchecked``, ...; the JSON value as
    sent, which may be anything), and its receipt tree, framed output and framed input (b"" when absent)."""

    fields: Any
    tree: bytes
    output: bytes
    input: bytes


@dataclass(frozen=True, slots=True)
class EvidencePage:
    job: dict[str, Any]  # JOB_FIELDS, as the peer states them
    start: int
    next: int | None
    tasks: list[TaskEvidence]


def encode_page(job: dict[str, Any], task_count: int, task: Callable[[int], TaskEvidence], start: int, *,
                bytes_max: int = PAGE_BYTES_MAX, tasks_max: int = PAGE_TASKS_MAX) -> bytes:
    """The page of the evidence of a job of ``task_count`` tasks from task ``start`` on; ``task(i)`` is task
    ``i``'s evidence (called for the tasks of this page only)."""
    if not 0 <= start <= task_count:
        raise ValueError(f"start {start} is not in 0..{task_count}")
    fields: list[Any] = []
    blobs: list[bytes] = []
    size, end = 0, start
    while end < task_count and end - start < tasks_max and (end == start or size < bytes_max):
        t = task(end)
        fields.append(t.fields)
        blobs += (t.tree, t.output, t.input)
        size += len(t.tree) + len(t.output) + len(t.input)
        end += 1
    header = {**{k: job.get(k) for k in JOB_FIELDS}, "start": start,
              "next": end if end < task_count else None, "tasks": fields}
    return frame_chunks([json.dumps(header, separators=(",", ":")).encode(), *blobs])


def decode_page(data: bytes) -> EvidencePage:
    """The page ``data`` holds; RemoteProtocolError naming what is malformed (the fields are checked by the
    verifier, task by task)."""
    parts = unframe_chunks(data)
    try:
        header = json.loads(parts[0]) if parts else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("tasks"), list):
        raise RemoteProtocolError("evidence page: the header is not a JSON object with a task list")
    tasks, start, nxt = header["tasks"], header.get("start"), header.get("next")
    if len(parts) != 1 + 3 * len(tasks):
        raise RemoteProtocolError(f"evidence page: {len(tasks)} task(s) but {len(parts) - 1} parts, not 3 each")
    if type(start) is not int or start < 0 or not (nxt is None or (type(nxt) is int and nxt > start)):
        raise RemoteProtocolError(f"evidence page: start {start!r} and next {nxt!r} do not advance")
    return EvidencePage(
        job={k: header.get(k) for k in JOB_FIELDS}, start=start, next=nxt,
        tasks=[TaskEvidence(t, *parts[1 + 3 * i : 4 + 3 * i]) for i, t in enumerate(tasks)],
    )
