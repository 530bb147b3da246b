"""The trio driver of a peer: ``open_peer`` (peer.py) and its state (state.py), the compute driver (compute.py)
on the interfaces of ports.py, the stream protocols (protocols/), the block store, the job journal, the
configuration, the key file and the local HTTP API."""
