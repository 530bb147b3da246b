"""The Python SDK: a client of a peer's local HTTP API (and, later, the split / execute / merge job DSL)."""

from pangea_p2p.sdk.client import Client as Client
