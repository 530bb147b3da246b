"""The built WebAssembly guests (sources and build in ``guests/``; ABI in ``protocols/guest-abi.md``).

``load_guest(name)`` returns a guest's module bytes; ``GUEST_NAMES`` lists them. Useful guests: ``echo``,
``matmul_block``, ``wordcount_map``, ``wordcount_reduce``, ``sha256``, ``bench`` (capacity adverts), ``probe``
(tests). Hostile guests for the tests: ``infinite_loop``, ``fuel_bomb``, ``memory_bomb``, ``deep_recursion``,
``forbidden_import``, ``huge_output``, ``invalid`` (not a module).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from pangea_p2p.errors import ConfigError

GUEST_NAMES: tuple[str, ...] = (
    "bench",
    "deep_recursion",
    "echo",
    "forbidden_import",
    "fuel_bomb",
    "huge_output",
    "infinite_loop",
    "invalid",
    "matmul_block",
    "memory_bomb",
    "probe",
    "sha256",
    "wordcount_map",
    "wordcount_reduce",
)


@cache
def load_guest(name: str) -> bytes:
    """The module bytes of the guest ``name`` (one of ``GUEST_NAMES``)."""
    if name not in GUEST_NAMES:
        raise ConfigError("guest", f"unknown guest {name!r}; known guests: {', '.join(GUEST_NAMES)}")
    return resources.files(__name__).joinpath(f"{name}.wasm").read_bytes()
