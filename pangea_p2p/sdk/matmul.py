"""The demo's job: a float64 matrix product split into blocks for the ``matmul_block`` guest.

``C = A @ B`` with A (m x k) and B (k x n) is cut into blocks C[I, J] of ``block x block``; each chunk holds the
row panel A[I, :] and the column panel B[:, J] (format in protocols/guest-abi.md), and the guest returns the C
block. The guest sums in a fixed order without FMA, so results are bit-for-bit reproducible (what redundant
workers vote on); numpy/BLAS sums in another order, so they agree to ~1e-15 relative, not bit for bit.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from pangea_p2p.sdk.job import Job, Limits, positive_int

F64 = npt.NDArray[np.float64]
_HEADER = struct.Struct("<IIII")


def check_operands(a: F64, b: F64, block: int) -> None:
    """ValueError unless ``a @ b`` is a product of two matrices; ConfigError unless ``block`` >= 1."""
    positive_int("block", block)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply {a.shape} by {b.shape}")


def block_inputs(a: F64, b: F64, block: int) -> list[bytes]:
    """One chunk per output block, row-major over the blocks of C (the edge blocks may be smaller)."""
    check_operands(a, b, block)
    m, k = a.shape
    n = b.shape[1]
    out = []
    for i in range(0, m, block):
        rows = np.ascontiguousarray(a[i : i + block], dtype="<f8")
        for j in range(0, n, block):
            cols = np.ascontiguousarray(b[:, j : j + block], dtype="<f8")
            out.append(_HEADER.pack(rows.shape[0], k, cols.shape[1], 0) + rows.tobytes() + cols.tobytes())
    return out


def assemble(outputs: list[bytes], m: int, n: int, block: int) -> F64:
    c = np.empty((m, n), dtype=np.float64)
    idx = 0
    for i in range(0, m, block):
        for j in range(0, n, block):
            rows, cols, _, _ = _HEADER.unpack_from(outputs[idx], 0)
            c[i : i + rows, j : j + cols] = np.frombuffer(outputs[idx], "<f8", rows * cols, _HEADER.size).reshape(
                rows, cols)
            idx += 1
    return c


def matmul_job(a: F64, b: F64, block: int = 64, *, verification: str = "hash", chunks_per_task: int = 4) -> Job[F64]:
    """A Job computing ``a @ b`` (call ``run(None, client)`` or ``run_local(None)``)."""
    check_operands(a, b, block)
    m, n = a.shape[0], b.shape[1]
    job: Job[F64] = Job(
        "matmul", guest="matmul_block", verification=verification, chunks_per_task=chunks_per_task,
        limits=Limits(fuel_max=50_000_000_000, memory_bytes_max=256 << 20, wall_time_s=60.0, output_bytes_max=64 << 20),
    )

    @job.split
    def _split(_: object) -> list[bytes]:
        return block_inputs(a, b, block)

    @job.merge
    def _merge(outputs: list[bytes]) -> F64:
        return assemble(outputs, m, n, block)

    return job
