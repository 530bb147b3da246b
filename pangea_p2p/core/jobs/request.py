"""JobRequest: a job as its submitter asks a peer for it, the typed body of the HTTP API's ``POST /v1/jobs``.

The SDK (``Job.submit``) and `pangea job submit` build one from the module and chunks they uploaded and their
``JobOptions``, and send ``to_json()``; the peer's API reads it back with ``from_json`` and makes the
``JobSpec`` it runs with ``to_spec``, adding what only the peer knows (each chunk's size, the time, a fresh job
id when the request names none). A JobRequest is validated on construction, so one that exists is one the API
takes (unless a block is missing from the peer's store): every problem is a one-line ``ConfigError`` naming
the field (the API answers 400 with it; the CLI names its flag instead).

The JSON object (the API's field names; all but ``module_cid`` and ``chunk_cids`` may be left out, and take the
defaults of ``JobOptions``; an unknown field is an error):

    {"module_cid": "bafk...", "chunk_cids": ["bafk...", ...], "job_id": "my-job",
     "chunks_per_task": 1, "verification": "hash" | "spot:K" | "replicas:N" | "adaptive",
     "limits": {"fuel_max": 10000000000, "memory_bytes_max": 104857600, "wall_time_s": 30.0,
                "output_bytes_max": 16777216},
     "deadline_s": 86400.0 (seconds from submission; null: none), "retries_max": 3, "escalations_max": 2,
     "depth_max": 2, "queue_timeout_s": 30.0, "fuel_per_chunk_estimate": 0}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pangea_p2p.core.jobs.model import (
    JobLimits,
    JobOptions,
    JobSpec,
    VerificationPolicy,
    check_chunking,
    check_job_id,
)
from pangea_p2p.errors import ConfigError

LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(JobLimits))
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions))
FIELDS = ("module_cid", "chunk_cids", "job_id", *OPTION_FIELDS)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Run ``module_cid`` over the chunks ``chunk_cids`` (blocks already uploaded to the peer) with ``options``."""

    module_cid: str
    chunk_cids: tuple[str, ...]
    options: JobOptions = field(default_factory=JobOptions)
    job_id: str | None = None  # None: the peer picks one

    def __post_init__(self) -> None:
        if not isinstance(self.module_cid, str) or not self.module_cid:
            raise ConfigError("module_cid", f"must be a non-empty content id, got {self.module_cid!r}")
        cids = self.chunk_cids
        if not isinstance(cids, tuple | list) or not all(isinstance(c, str) and c for c in cids):
            raise ConfigError("chunk_cids", "must be a list of content ids")
        object.__setattr__(self, "chunk_cids", tuple(cids))
        if not isinstance(self.options, JobOptions):
            raise ConfigError("options", f"must be a JobOptions, got {type(self.options).__name__}")
        check_chunking(len(self.chunk_cids), self.options.chunks_per_task)
        if self.job_id is not None:
            check_job_id(self.job_id)

    def to_json(self) -> dict[str, Any]:
        """The API's JSON object: every option spelt out (the peer's defaults do not matter), ``job_id`` only
        when set."""
        opts = self.options
        doc: dict[str, Any] = {"module_cid": self.module_cid, "chunk_cids": list(self.chunk_cids)}
        if self.job_id is not None:
            doc["job_id"] = self.job_id
        for name in OPTION_FIELDS:
            value = getattr(opts, name)
            if name == "limits":
                value = {k: getattr(opts.limits, k) for k in LIMIT_FIELDS}
            elif name == "verification":
                value = str(value)
            doc[name] = value  # deadline_s None: no deadline (null, not the default)
        return doc

    @classmethod
    def from_json(cls, doc: object) -> JobRequest:
        """The request in the API's JSON object ``doc`` (decoded); ConfigError naming the first bad field."""
        if not isinstance(doc, dict):
            raise ConfigError("request", f"the job request must be a JSON object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known: {', '.join(sorted(FIELDS))}")
        options: dict[str, Any] = {k: doc[k] for k in OPTION_FIELDS if k in doc}
        if "limits" in options:
            limits = options["limits"]
            if not isinstance(limits, dict) or set(limits) - set(LIMIT_FIELDS):
                raise ConfigError("limits", f"must be an object with keys among {', '.join(LIMIT_FIELDS)}")
            options["limits"] = JobLimits(**limits)
        if "verification" in options:
            text = options["verification"]
            if not isinstance(text, str):
                raise ConfigError("verification", f"must be a string (hash, spot:K, replicas:N, adaptive): {text!r}")
            options["verification"] = VerificationPolicy.parse(text)
        chunk_cids = doc.get("chunk_cids")
        if not isinstance(chunk_cids, list):
            raise ConfigError("chunk_cids", "must be a list of content ids")
        return cls(doc.get("module_cid"), tuple(chunk_cids), JobOptions(**options), doc.get("job_id"))  # type: ignore[arg-type]

    def to_spec(self, chunk_sizes: Sequence[int], now: float, fresh_job_id: str) -> JobSpec:
        """The JobSpec a peer runs for this request: ``chunk_sizes`` are the uploaded chunks' sizes, ``now`` makes
        the deadline absolute, ``fresh_job_id`` is the id when the request names none."""
        opts = self.options
        return JobSpec(
            job_id=self.job_id or fresh_job_id,
            module_cid=self.module_cid,
            chunk_cids=self.chunk_cids,
            chunk_sizes=tuple(chunk_sizes),
            limits=opts.limits.receipt_limits(),
            chunks_per_task=opts.chunks_per_task,
            verification=opts.verification,
            deadline_s=math.inf if opts.deadline_s is None else now + opts.deadline_s,
            retries_max=opts.retries_max,
            escalations_max=opts.escalations_max,
            depth_max=opts.depth_max,
            queue_timeout_s=opts.queue_timeout_s,
            fuel_per_chunk_estimate=opts.fuel_per_chunk_estimate,
        )
