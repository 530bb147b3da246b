"""matmul_job: A @ B cut into blocks for the ``matmul_block`` guest, run locally, against numpy.

The guest sums ``C[i][j] = ((+0.0 + A[i][0]*B[0][j]) + A[i][1]*B[1][j]) + ...`` in that order with every
product and sum rounded to float64 (protocols/guest-abi.md). ``in_guest_order`` computes the same with numpy
elementwise operations (one rounding each, no fused multiply-add), so the job's result must equal it bit for
bit; against BLAS's ``a @ b`` (another order) the tolerance is 1e-12 relative to the size of the terms.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import pytest

from pangea_p2p.errors import ConfigError
from pangea_p2p.sdk.matmul import assemble, block_inputs, matmul_job
from tests.sdk.fakes import FakePeer

F64 = npt.NDArray[np.float64]


def in_guest_order(a: F64, b: F64) -> F64:
    c = np.zeros((a.shape[0], b.shape[1]))
    for p in range(a.shape[1]):
        c = c + a[:, p : p + 1] * b[p : p + 1, :]
    return c


def close_to_blas(c: F64, a: F64, b: F64) -> None:
    scale = np.abs(a) @ np.abs(b)  # bounds every partial sum
    assert np.all(np.abs(c - a @ b) <= 1e-12 * scale + 1e-300)


def operands(m: int, k: int, n: int, seed: int = 0) -> tuple[F64, F64]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)), rng.standard_normal((k, n))


@pytest.mark.parametrize(
    ("m", "k", "n", "block"),
    [
        (16, 16, 16, 4),  # square, the block divides the size
        (16, 16, 16, 5),  # square, it does not: 4x4 blocks, the last row and column of them smaller
        (7, 5, 9, 4),  # non-square, non-dividing
        (3, 4, 2, 64),  # a block larger than the whole matrix: one chunk
        (5, 3, 6, 1),  # one element per block
        (1, 8, 1, 3),  # a dot product
    ],
)
def test_matmul_job_is_exact_in_the_guest_order(m: int, k: int, n: int, block: int) -> None:
    a, b = operands(m, k, n, seed=m * 100 + block)
    job = matmul_job(a, b, block)
    assert len(job.chunks(None)) == -(-m // block) * -(-n // block)
    c = job.run_local(None)
    assert c.shape == (m, n)
    assert c.dtype == np.float64
    assert np.array_equal(c, in_guest_order(a, b))
    close_to_blas(c, a, b)


@pytest.mark.parametrize("chunks_per_task", [1, 3, 100])
def test_blocks_come_back_in_place_whatever_the_task_size(chunks_per_task: int) -> None:
    # 3 x 4 = 12 blocks; with 3 per task, 5 per task and so on the tasks cut the row of blocks differently
    a, b = operands(11, 6, 14, seed=7)
    c = matmul_job(a, b, 4, chunks_per_task=chunks_per_task).run_local(None)
    assert np.array_equal(c, in_guest_order(a, b))


def test_integer_and_non_contiguous_operands() -> None:
    a = np.arange(35, dtype=np.int64).reshape(5, 7) - 17
    b = np.asfortranarray(np.arange(21, dtype=np.int64).reshape(7, 3) * 3 - 20)
    c = matmul_job(a, b[:, ::-1], 2).run_local(None)  # type: ignore[arg-type]  # converted to float64
    assert np.array_equal(c, (a @ b[:, ::-1]).astype(np.float64))  # small integers: exact in any order


def test_block_inputs_layout() -> None:
    a, b = operands(3, 2, 5, seed=1)
    chunks = block_inputs(a, b, 2)
    assert len(chunks) == 2 * 3
    # the last block: rows 2..2 of A, columns 4..4 of B
    m, k, n, reserved = struct.unpack_from("<IIII", chunks[-1])
    assert (m, k, n, reserved) == (1, 2, 1, 0)
    body = np.frombuffer(chunks[-1], "<f8", offset=16)
    assert np.array_equal(body, np.concatenate([a[2:3].ravel(), b[:, 4:5].ravel()]))


def test_assemble_places_each_block() -> None:
    m, n, block = 3, 5, 2
    outputs = []
    for i in range(0, m, block):
        for j in range(0, n, block):
            rows, cols = min(block, m - i), min(block, n - j)
            values = np.full(rows * cols, 10.0 * i + j)
            outputs.append(struct.pack("<IIII", rows, cols, 0, 0) + values.astype("<f8").tobytes())
    c = assemble(outputs, m, n, block)
    expected = np.array([[10.0 * (r // 2 * 2) + (col // 2 * 2) for col in range(n)] for r in range(m)])
    assert np.array_equal(c, expected)


@pytest.mark.parametrize("block", [0, -4])
def test_a_block_below_one_is_a_config_error(block: int) -> None:
    a, b = operands(4, 4, 4)
    with pytest.raises(ConfigError, match=f"got {block}") as info:
        matmul_job(a, b, block)
    assert info.value.key == "block"


def test_incompatible_shapes_fail_when_the_job_is_made() -> None:
    a, b = operands(4, 3, 4)
    with pytest.raises(ValueError, match=r"cannot multiply \(4, 3\) by \(4, 4\)"):
        matmul_job(a, np.ones((4, 4)), 2)
    with pytest.raises(ValueError, match=r"cannot multiply \(3,\) by \(3, 4\)"):
        matmul_job(np.ones(3), b, 2)


def test_through_a_peer_with_numpy_integer_arguments() -> None:
    # the demo's path: run(None, client); numpy integers must reach the JSON request as plain ints
    a, b = operands(9, 4, 6, seed=3)
    peer = FakePeer()
    c = matmul_job(a, b, np.int64(4), chunks_per_task=np.int64(2)).run(None, peer)  # type: ignore[arg-type]
    assert np.array_equal(c, in_guest_order(a, b))
    (request,) = peer.requests
    assert type(request["chunks_per_task"]) is int
    assert request["chunks_per_task"] == 2
    assert len(request["chunk_cids"]) == 3 * 2
    assert request["limits"]["fuel_max"] == 50_000_000_000  # above the sandbox's default maximum of 10^10


@pytest.mark.parametrize("block", [2.0, "4", True])
def test_a_block_that_is_not_an_integer_is_a_config_error(block: object) -> None:
    a, b = operands(4, 4, 4)
    with pytest.raises(ConfigError) as info:
        matmul_job(a, b, block)  # type: ignore[arg-type]
    assert info.value.key == "block"
