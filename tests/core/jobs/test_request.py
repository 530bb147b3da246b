"""JobRequest, JobOptions and JobLimits: one typed job request, its JSON (the HTTP API's field names), its
defaults in one place, and one-line errors that name the field."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import (
    DEFAULT_DEADLINE_S,
    DEFAULT_OPTIONS,
    JobLimits,
    JobOptions,
    JobSpec,
    VerificationMode,
    VerificationPolicy,
)
from pangea_p2p.core.jobs.request import FIELDS, JobRequest
from pangea_p2p.errors import ConfigError

MODULE = cid_of(b"module")
CHUNKS = tuple(cid_of(bytes([i])) for i in range(5))
NOW = 1_750_000_000.0
# The fields of POST /v1/jobs before JobRequest existed: the JSON format stays compatible.
API_FIELDS = {"job_id", "module_cid", "chunk_cids", "chunks_per_task", "limits", "verification", "deadline_s",
              "retries_max", "escalations_max", "depth_max", "queue_timeout_s", "fuel_per_chunk_estimate"}
LIMIT_FIELDS = {"fuel_max", "memory_bytes_max", "wall_time_s", "output_bytes_max"}

EVERYTHING = JobRequest(
    MODULE, CHUNKS, JobOptions(
        chunks_per_task=2, limits=JobLimits(fuel_max=5000, memory_bytes_max=1 << 20, wall_time_s=2.5,
                                            output_bytes_max=4096),
        verification=VerificationPolicy.parse("replicas:5"), deadline_s=90.0, retries_max=0, escalations_max=1,
        depth_max=0, queue_timeout_s=5.5, fuel_per_chunk_estimate=77,
    ), job_id="my-job",
)


def test_the_json_has_the_apis_field_names_and_round_trips() -> None:
    doc = EVERYTHING.to_json()
    assert set(doc) == API_FIELDS == set(FIELDS)
    assert set(doc["limits"]) == LIMIT_FIELDS
    assert doc["verification"] == "replicas:5"
    assert doc["chunk_cids"] == list(CHUNKS)
    assert JobRequest.from_json(json.loads(json.dumps(doc))) == EVERYTHING


def test_a_minimal_request_has_the_defaults_and_sends_every_option() -> None:
    request = JobRequest.from_json({"module_cid": MODULE, "chunk_cids": list(CHUNKS)})
    assert request.options == DEFAULT_OPTIONS == JobOptions()
    assert request.job_id is None
    doc = request.to_json()
    assert set(doc) == API_FIELDS - {"job_id"}  # the peer picks an id
    assert doc["deadline_s"] == DEFAULT_DEADLINE_S == 86400.0  # a day unless the submitter says otherwise
    assert doc["limits"] == dataclasses.asdict(DEFAULT_OPTIONS.limits)
    assert (doc["chunks_per_task"], doc["verification"], doc["retries_max"], doc["escalations_max"],
            doc["depth_max"], doc["queue_timeout_s"], doc["fuel_per_chunk_estimate"]) == (1, "hash", 3, 2, 2, 30.0, 0)
    no_deadline = JobRequest(MODULE, CHUNKS, JobOptions(deadline_s=None)).to_json()
    assert no_deadline["deadline_s"] is None  # sent as null: "no deadline", not the peer's default
    assert JobRequest.from_json(no_deadline).to_spec([1] * 5, NOW, "j").deadline_s == math.inf


def test_the_spec_carries_every_option_and_the_peers_facts() -> None:
    spec = EVERYTHING.to_spec([10, 20, 30, 40, 50], NOW, "unused")
    assert (spec.job_id, spec.module_cid, spec.chunk_cids, spec.chunk_sizes) == ("my-job", MODULE, CHUNKS,
                                                                                  (10, 20, 30, 40, 50))
    assert dataclasses.asdict(spec.limits) == dataclasses.asdict(EVERYTHING.options.limits)
    assert spec.deadline_s == NOW + 90.0
    assert (spec.verification.mode, spec.verification.replicas) == (VerificationMode.REPLICAS, 5)
    assert (spec.chunks_per_task, spec.task_count, spec.retries_max, spec.escalations_max, spec.depth_max,
            spec.queue_timeout_s, spec.fuel_per_chunk_estimate) == (2, 3, 0, 1, 0, 5.5, 77)
    minimal = JobRequest(MODULE, CHUNKS).to_spec([1] * 5, NOW, "fresh")
    assert (minimal.job_id, minimal.deadline_s) == ("fresh", NOW + DEFAULT_DEADLINE_S)


def test_a_specs_defaults_are_the_options_defaults() -> None:
    spec = JobSpec("j", MODULE, CHUNKS, (1,) * 5, DEFAULT_OPTIONS.limits.receipt_limits(),
                   deadline_s=NOW + DEFAULT_DEADLINE_S)
    assert JobRequest(MODULE, CHUNKS).to_spec([1] * 5, NOW, "j") == spec


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        ({"module_cid": ""}, "module_cid", "must be a non-empty content id"),
        ({"module_cid": None}, "module_cid", "must be a non-empty content id, got None"),
        ({"chunk_cids": "bafk"}, "chunk_cids", "must be a list of content ids"),
        ({"chunk_cids": [1]}, "chunk_cids", "must be a list of content ids"),
        ({"chunk_cids": []}, "chunk_cids", "need 1..1048576 chunks, got 0"),
        ({"chunks_per_task": 6}, "chunks_per_task", "must be in 1..5, got 6"),
        ({"chunks_per_task": 0}, "chunks_per_task", "must be in 1..1048576, got 0"),
        ({"chunks_per_task": "two"}, "chunks_per_task", "must be an integer in 1..1048576, got 'two'"),
        ({"chunks_per_task": 1.5}, "chunks_per_task", "must be an integer"),
        ({"chunks_per_task": True}, "chunks_per_task", "must be an integer"),
        ({"retries_max": 17}, "retries_max", "must be in 0..16, got 17"),
        ({"escalations_max": -1}, "escalations_max", "must be in 0..8, got -1"),
        ({"escalations_max": None}, "escalations_max", "must be an integer"),
        ({"depth_max": 9}, "depth_max", "must be in 0..8, got 9"),
        ({"queue_timeout_s": 0}, "queue_timeout_s", "must be in (0, 86400], got 0"),
        ({"queue_timeout_s": "soon"}, "queue_timeout_s", "must be a number in"),
        ({"fuel_per_chunk_estimate": 1 << 64}, "fuel_per_chunk_estimate", "must be in 0..18446744073709551615"),
        ({"deadline_s": -5}, "deadline_s", "must be a positive, finite number of seconds (none: leave it out), got -5"),
        ({"deadline_s": 0}, "deadline_s", "got 0"),
        ({"deadline_s": math.nan}, "deadline_s", "got nan"),
        ({"deadline_s": math.inf}, "deadline_s", "got inf"),
        ({"deadline_s": "tomorrow"}, "deadline_s", "got 'tomorrow'"),
        ({"verification": "bogus"}, "verification", "'bogus': use hash, spot:K, replicas:N or adaptive"),
        ({"verification": 3}, "verification", "must be a string"),
        ({"verification": "replicas:40"}, "verification.replicas", "must be in 1..9, got 40"),
        ({"limits": {"fuel": 1}}, "limits", "must be an object with keys among fuel_max, memory_bytes_max"),
        ({"limits": []}, "limits", "must be an object"),
        ({"limits": {"fuel_max": 0}}, "limits.fuel_max", "must be in 1..1000000000000000, got 0"),
        ({"limits": {"memory_bytes_max": 1000}}, "limits.memory_bytes_max", "must be in 65536..4294967296"),
        ({"limits": {"wall_time_s": "long"}}, "limits.wall_time_s", "must be a number in"),
        ({"limits": {"output_bytes_max": 2 << 30}}, "limits.output_bytes_max", "must be in 0..1073741824"),
        ({"job_id": "a/b"}, "job_id", "'a/b' must be 1..64 characters of A-Z a-z 0-9 - _"),
        ({"job_id": "a?b"}, "job_id", "'a?b' must be 1..64 characters of A-Z a-z 0-9 - _"),
        ({"job_id": "a\x00b"}, "job_id", "'a\\x00b' must be 1..64 characters"),
        ({"job_id": "a\nb"}, "job_id", "'a\\nb' must be 1..64 characters"),
        ({"job_id": "x" * 65}, "job_id", "must be 1..64 characters"),
        ({"job_id": ""}, "job_id", "must be 1..64 characters"),
        ({"limits": {"memory_bytes_max": 0}}, "limits.memory_bytes_max", "must be in 65536..4294967296, got 0"),
        ({"limits": {"wall_time_s": 1e-9}}, "limits.wall_time_s", "must be in 0.001..86400, got 1e-09"),
        ({"limits": {"wall_time_s": math.nan}}, "limits.wall_time_s", "must be in 0.001..86400, got nan"),
        ({"limits": {"wall_time_s": math.inf}}, "limits.wall_time_s", "must be in 0.001..86400, got inf"),
        ({"limits": {"fuel_max": math.nan}}, "limits.fuel_max", "must be an integer in 1..1000000000000000, got nan"),
        ({"queue_timeout_s": math.nan}, "queue_timeout_s", "got nan"),
        ({"queue_timeout_s": -math.inf}, "queue_timeout_s", "got -inf"),
        ({"job_id": 5}, "job_id", "must be a string, got 5"),
        ({"chunk_size": 4}, "chunk_size", "unknown field; known: chunk_cids, chunks_per_task, deadline_s"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(changes: dict[str, Any], key: str, problem: str) -> None:
    doc = {"module_cid": MODULE, "chunk_cids": list(CHUNKS), **changes}
    with pytest.raises(ConfigError) as info:
        JobRequest.from_json(doc)
    assert info.value.key == key
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("doc", [None, [], "job", 3])
def test_the_request_must_be_an_object(doc: Any) -> None:
    with pytest.raises(ConfigError, match="the job request must be a JSON object") as info:
        JobRequest.from_json(doc)
    assert info.value.key == "request"


def test_options_take_numpy_integers_as_plain_ints_and_refuse_booleans() -> None:
    options = JobOptions(chunks_per_task=np.int64(4), retries_max=np.uint8(1),  # type: ignore[arg-type]
                         limits=JobLimits(fuel_max=np.int32(10**6)), queue_timeout_s=np.float32(2.5))  # type: ignore[arg-type]
    assert [type(v) for v in (options.chunks_per_task, options.retries_max, options.limits.fuel_max,
                              options.queue_timeout_s)] == [int, int, int, float]
    json.dumps(JobRequest(MODULE, CHUNKS, options).to_json())  # a plain JSON document
    with pytest.raises(ConfigError, match="depth_max"):
        JobOptions(depth_max=True)


def test_fitted_caps_chunks_per_task_at_the_chunk_count() -> None:
    options = JobOptions(chunks_per_task=50, retries_max=1)
    assert options.fitted(5) == JobOptions(chunks_per_task=5, retries_max=1)
    assert options.fitted(100) == options


@given(
    chunks=st.integers(1, 40), per_task=st.integers(1, 60), retries=st.integers(0, 16),
    fuel=st.integers(1, 10**15), wall=st.floats(0.001, 86400), deadline=st.none() | st.floats(0.001, 1e9),
    verification=st.sampled_from(["hash", "spot:1", "spot:64", "replicas:1", "replicas:9", "adaptive"]),
)
def test_a_request_that_exists_is_one_the_api_takes(chunks: int, per_task: int, retries: int, fuel: int,
                                                    wall: float, deadline: float | None, verification: str) -> None:
    options = JobOptions(limits=JobLimits(fuel_max=fuel, wall_time_s=wall), retries_max=retries,
                         verification=VerificationPolicy.parse(verification), deadline_s=deadline,
                         chunks_per_task=per_task).fitted(chunks)
    request = JobRequest(MODULE, CHUNKS[:1] * chunks, options)
    again = JobRequest.from_json(json.loads(json.dumps(request.to_json())))
    assert again == request
    spec = again.to_spec([1] * chunks, NOW, "job")
    assert spec.task_count == -(-chunks // options.chunks_per_task)
