"""What the sandbox does to its callers' arguments before using them (private to the sandbox).

- Content ids: a caller may spell a CID in any multibase (base32 upper, base58, base64 with ``/`` ...);
  the sandbox keys its caches, the worker protocol and the disk cache's file names by one canonical form,
  ``pangea_p2p.core.cid.canonical_cid`` (CIDv1 raw sha2-256 base32, ``bafkrei...``; an id already in that
  form is recognised in ~1 µs and returned as is).
- Inputs: any C-contiguous buffer is accepted and seen as bytes (``memoryview(x).cast("B")``), so its
  length is its size in bytes whatever the item size of the exporter (an ``array('d')`` view has 8 bytes
  per item). A strided view or a non-buffer is our caller's bug: ``LocalProtocolError``, before anything
  is queued or sent.
- Refusals that need no worker (``refusal``): limits above the node's maxima, a module larger than the
  node allows (both REJECTED: another node may take the task), a malformed CID (INVALID_MODULE), too many
  chunks or a chunk larger than the task's memory or 2^32 - 1 bytes (INVALID_INPUT, naming the chunk).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pangea_p2p.core.chunks import CHUNK_BYTES_MAX, CHUNKS_MAX
from pangea_p2p.core.cid import canonical_cid as core_canonical_cid
from pangea_p2p.errors import FailureKind, LocalProtocolError, RemoteProtocolError
from pangea_p2p.sandbox.result import ChunksResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pangea_p2p.sandbox.config import SandboxConfig, SandboxLimits

Input = bytes | bytearray | memoryview

def canonical_cid(cid: str) -> str:
    """The canonical spelling of ``cid``; RemoteProtocolError if it is not a sha2-256 content id,
    LocalProtocolError if it is not even a str (our caller's bug)."""
    if not isinstance(cid, str):
        raise LocalProtocolError(f"a content id is a str, got {type(cid).__name__}")
    return core_canonical_cid(cid)


def as_input(data: Input) -> bytes | memoryview:
    """``data`` as bytes or a one-dimensional byte view (no copy); LocalProtocolError for a strided view."""
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise LocalProtocolError(f"task input must be bytes, bytearray or a buffer, got {type(data).__name__}"
                                 ) from None
    if not view.c_contiguous:
        raise LocalProtocolError("task input must be a C-contiguous buffer, got a strided memoryview; "
                                 "pass bytes(view) instead")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def module_too_large(size: int, allowed: int) -> str:
    return f"module is {size} bytes, more than the {allowed} this node allows"


def refusal(config: SandboxConfig, cid: str, module: bytes | None, views: Sequence[bytes | memoryview],
            limits: SandboxLimits) -> ChunksResult | None:
    """Why the task cannot run on this node, found without a worker; None when nothing is wrong yet."""
    excess = limits.excess_over(config.limits_max)
    if excess is not None:
        return ChunksResult.failed(FailureKind.REJECTED, excess)
    try:
        canonical_cid(cid)
    except RemoteProtocolError as exc:
        return ChunksResult.failed(FailureKind.INVALID_MODULE, str(exc))
    if module is not None and len(module) > config.module_bytes_max:
        return ChunksResult.failed(FailureKind.REJECTED, module_too_large(len(module), config.module_bytes_max))
    if len(views) > CHUNKS_MAX:
        return ChunksResult.failed(FailureKind.INVALID_INPUT, f"task has {len(views)} chunks, at most "
                                   f"{CHUNKS_MAX}")
    allowed = min(limits.memory_bytes_max, CHUNK_BYTES_MAX)
    for i, view in enumerate(views):
        if len(view) > allowed:
            return ChunksResult.failed(FailureKind.INVALID_INPUT, f"input is {len(view)} bytes, more than the "
                                       f"{allowed} allowed (the task's memory limit, and below 4 GiB)",
                                       failed_index=i)
    return None
