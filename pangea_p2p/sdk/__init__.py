"""The Python SDK: a client of a peer's local HTTP API and the split / execute / merge job DSL.

The names below are loaded when first used (PEP 562), so that a program that needs only the client (every
`pangea` client command) does not load the job DSL, the sandbox's types and the core's job model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pangea_p2p.sdk import splits as splits
    from pangea_p2p.sdk.client import Client as Client
    from pangea_p2p.sdk.job import Job as Job
    from pangea_p2p.sdk.job import JobFailed as JobFailed
    from pangea_p2p.sdk.job import JobHandle as JobHandle
    from pangea_p2p.sdk.job import Limits as Limits
    from pangea_p2p.sdk.job import Progress as Progress
    from pangea_p2p.sdk.job import UncheckedResultWarning as UncheckedResultWarning

_WHERE = {"Client": "client", "Job": "job", "JobFailed": "job", "JobHandle": "job", "Limits": "job",
          "Progress": "job", "UncheckedResultWarning": "job"}
__all__ = ["Client", "Job", "JobFailed", "JobHandle", "Limits", "Progress", "UncheckedResultWarning", "splits"]


def __getattr__(name: str) -> Any:
    if name == "splits":
        return importlib.import_module(f"{__name__}.splits")
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
