"""Pangea P2P: a peer-to-peer compute network.

Layers (see ../shared/DESIGN.md and README.md):

- ``pangea_p2p.core``     pure protocol logic (sans-IO): capacity directory, scheduling, verification, trust
- ``pangea_p2p.sandbox``  the WebAssembly sandbox (wasmtime) in worker processes
- ``pangea_p2p.net``      the py-libp2p adapter: host, DHT, gossipsub, framed stream protocols
- ``pangea_p2p.node``     the trio driver of a peer, its local HTTP API and the ``pangea`` CLI
- ``pangea_p2p.sdk``      the Python client and the split / execute / merge job DSL
- ``pangea_p2p.sim``      the deterministic network simulator that drives the same core objects
"""

__version__ = "0.1.0"
