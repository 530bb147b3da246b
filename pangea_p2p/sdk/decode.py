"""Readable results of the built-in guests: a job's outputs (one per chunk, in order) as a person or a program
reads them. A job names its guest by the module's content id, so ``decoder_for(module_cid)`` finds the decoder.

    wordcount_map, wordcount_reduce   tsv (word<TAB>count, most frequent first) | json ({word: count}): the
                                      tables of all chunks summed
    sha256                            hex: one digest per line, in chunk order | json: a list of them
    matmul_block                      npy: the product matrix (a .npy file) | json: {"shape", "rows"}

    decoder = decoder_for(result["module_cid"])      # None for a guest that has none
    decoder.render(outputs, "tsv")                   # bytes to write
    decoder.to_json(outputs)                         # a JSON value

Formats are in ``protocols/guest-abi.md``; a malformed output is a PangeaError naming its chunk. A matrix's
blocks come without the product's shape: it is read from the edge blocks, and must be given (``shape``) when
every block has the same size.
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pangea_p2p.errors import ConfigError, PangeaError

Shape = tuple[int, int]


@dataclass(frozen=True)
class Decoder:
    """How to read the outputs of the guest ``guest``: ``formats`` maps a format's name to whether it is text;
    the first is the default."""

    guest: str
    formats: dict[str, bool]
    _render: Callable[[Sequence[bytes], str, Shape | None], bytes]
    _json: Callable[[Sequence[bytes], Shape | None], Any]

    @property
    def default(self) -> str:
        return next(iter(self.formats))

    def check_format(self, fmt: str) -> None:
        """ConfigError("--format") unless ``fmt`` is one of its formats."""
        if fmt not in self.formats:
            raise ConfigError("--format", f"{fmt!r}: {self.guest} results come as {', '.join(self.formats)} or raw")

    def render(self, outputs: Sequence[bytes], fmt: str, shape: Shape | None = None) -> bytes:
        self.check_format(fmt)
        return self._render(outputs, fmt, shape)

    def to_json(self, outputs: Sequence[bytes], shape: Shape | None = None) -> Any:
        return self._json(outputs, shape)


# --- wordcount ----------------------------------------------------------------------------------------------


def word_counts(outputs: Sequence[bytes]) -> dict[str, int]:
    """The word-count tables of ``outputs`` summed, most frequent first (then by word). A word that is not UTF-8
    keeps its other bytes as ``\\xNN`` escapes."""
    counts: Counter[str] = Counter()
    for index, table in enumerate(outputs):
        try:
            (entries,) = struct.unpack_from("<I", table, 0)
            pos = 4
            for _ in range(entries):
                (length,) = struct.unpack_from("<I", table, pos)
                word = table[pos + 4 : pos + 4 + length]
                (count,) = struct.unpack_from("<Q", table, pos + 4 + length)
                if len(word) != length:
                    raise struct.error("word cut short")
                counts[word.decode("utf-8", errors="backslashreplace")] += count
                pos += 12 + length
        except struct.error:
            raise PangeaError(f"the output of chunk {index} is not a word-count table") from None
        if pos != len(table):
            raise PangeaError(f"the output of chunk {index} is not a word-count table ({len(table) - pos} bytes "
                              "after its last entry)")
    return dict(sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])))


def _wordcount_render(outputs: Sequence[bytes], fmt: str, _: Shape | None) -> bytes:
    counts = word_counts(outputs)
    if fmt == "json":
        return _json_bytes(counts)
    return "".join(f"{w}\t{c}\n" for w, c in [("word", "count"), *counts.items()]).encode()


# --- sha256 -------------------------------------------------------------------------------------------------


def digests(outputs: Sequence[bytes]) -> list[str]:
    for index, digest in enumerate(outputs):
        if len(digest) != 32:
            raise PangeaError(f"the output of chunk {index} is {len(digest)} bytes, not a 32-byte SHA-256 digest")
    return [d.hex() for d in outputs]


def _sha256_render(outputs: Sequence[bytes], fmt: str, _: Shape | None) -> bytes:
    found = digests(outputs)
    return _json_bytes(found) if fmt == "json" else "".join(d + "\n" for d in found).encode()


# --- matmul_block -------------------------------------------------------------------------------------------

_BLOCK_HEADER = struct.Struct("<IIII")


def _block_shapes(outputs: Sequence[bytes]) -> list[Shape]:
    shapes = []
    for index, out in enumerate(outputs):
        if len(out) < _BLOCK_HEADER.size:
            raise PangeaError(f"the output of chunk {index} is not a matrix block (too short)")
        rows, cols, _, _ = _BLOCK_HEADER.unpack_from(out, 0)
        if len(out) != _BLOCK_HEADER.size + 8 * rows * cols:
            raise PangeaError(f"the output of chunk {index} is not a matrix block ({rows}x{cols} in {len(out)} bytes)")
        shapes.append((rows, cols))
    return shapes


def grid_width(shapes: Sequence[Shape], shape: Shape | None) -> int:
    """How many blocks make one row of blocks of the product (blocks come row by row, edge blocks may be smaller):
    from ``shape`` (rows, columns of the product) if given, else from the first narrower or lower block."""
    if not shapes:
        raise PangeaError("the job has no output blocks")
    rows0, cols0 = shapes[0]
    if shape is not None:
        width = -(-shape[1] // cols0)
    else:
        narrower = next((i for i, (_, c) in enumerate(shapes) if c != cols0), None)
        lower = sum(1 for r, _ in shapes if r != rows0)
        if narrower is not None:
            width = narrower + 1
        elif lower:
            width = lower
        elif len(shapes) == 1:
            width = 1
        else:
            raise ConfigError("--shape", f"the {len(shapes)} blocks of {rows0}x{cols0} could make matrices of several "
                                         "shapes: say the product's with --shape ROWSxCOLS")
    if len(shapes) % width:
        raise PangeaError(f"{len(shapes)} blocks do not make rows of {width} blocks")
    return width


def matrix(outputs: Sequence[bytes], shape: Shape | None = None) -> Any:
    """The product the ``matmul_block`` outputs make (a float64 numpy array)."""
    import numpy as np  # only for matrices

    shapes = _block_shapes(outputs)
    width = grid_width(shapes, shape)
    heights = [shapes[i][0] for i in range(0, len(shapes), width)]
    widths = [shapes[j][1] for j in range(width)]
    m, n = sum(heights), sum(widths)
    if shape is not None and shape != (m, n):
        raise ConfigError("--shape", f"{shape[0]}x{shape[1]}: the blocks make a {m}x{n} matrix")
    out = np.empty((m, n), dtype=np.float64)
    top = 0
    for bi, height in enumerate(heights):
        left = 0
        for bj, w in enumerate(widths):
            index = bi * width + bj
            if shapes[index] != (height, w):
                raise PangeaError(f"the output of chunk {index} is a {shapes[index][0]}x{shapes[index][1]} block, "
                                  f"where a {height}x{w} block belongs")
            out[top : top + height, left : left + w] = np.frombuffer(
                outputs[index], "<f8", height * w, _BLOCK_HEADER.size).reshape(height, w)
            left += w
        top += height
    return out


def _matmul_render(outputs: Sequence[bytes], _: str, shape: Shape | None) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, matrix(outputs, shape), allow_pickle=False)
    return buf.getvalue()


def _matmul_json(outputs: Sequence[bytes], shape: Shape | None) -> Any:
    c = matrix(outputs, shape)
    return {"shape": list(c.shape), "rows": c.tolist()}


# --- the table ----------------------------------------------------------------------------------------------


def _json_bytes(value: Any) -> bytes:
    import json

    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode()


def _wordcount(guest: str) -> Decoder:
    return Decoder(guest, {"tsv": True, "json": True}, _wordcount_render, lambda outs, _: word_counts(outs))


DECODERS: dict[str, Decoder] = {
    "wordcount_map": _wordcount("wordcount_map"),
    "wordcount_reduce": _wordcount("wordcount_reduce"),
    "sha256": Decoder("sha256", {"hex": True, "json": True}, _sha256_render, lambda outs, _: digests(outs)),
    "matmul_block": Decoder("matmul_block", {"npy": False, "json": True}, _matmul_render, _matmul_json),
}


@cache
def _by_cid() -> dict[str, Decoder]:
    from pangea_p2p.core.cid import cid_of
    from pangea_p2p.guests import load_guest

    return {cid_of(load_guest(name)): decoder for name, decoder in DECODERS.items()}


def decoder_for(module_cid: str) -> Decoder | None:
    """The decoder of the built-in guest whose module is ``module_cid``; None for any other module."""
    return _by_cid().get(module_cid)


def parse_shape(text: str) -> Shape:
    """``"512x384"`` as (512, 384); ConfigError("--shape") otherwise."""
    rows, x, cols = text.lower().partition("x")
    try:
        shape = (int(rows), int(cols))
    except ValueError:
        shape = (0, 0)
    if not x or min(shape) < 1:
        raise ConfigError("--shape", f"{text!r}: use ROWSxCOLS, e.g. 512x512")
    return shape
