"""Merging the outputs of split parts.

A delegation receipt commits to its children's receipts; the output that travels with it is the merge of the
children's outputs: all their chunks, in order, framed as one list. ``verify_tree(..., output=)`` cuts it back
into the leaves' parts and checks each against its leaf, so an intermediate peer cannot alter, reorder or drop
a chunk without being caught.
"""

from __future__ import annotations

from collections.abc import Sequence

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks


def merge_outputs(outputs: Sequence[bytes]) -> bytes:
    """One framed list of all the chunks of ``outputs`` (each a framed list), in order."""
    chunks: list[bytes] = []
    for out in outputs:
        chunks.extend(unframe_chunks(out))
    return frame_chunks(chunks)
