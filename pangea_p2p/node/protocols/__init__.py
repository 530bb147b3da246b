"""The peer's stream protocols, one module each: the wire handling of a libp2p stream, both sides.

    block.py          /pangea/block/1.0.0           content-addressed blocks: serve, fetch (peers, then DHT providers)
    capacity_sync.py  /pangea/capacity-sync/1.0.0   a joining peer copies a neighbour's capacity directory
    compute.py        /pangea/compute/1.0.0         offers and answers between issuers and workers (framing only:
                                                    what they mean is core/jobs; the driver is node/compute.py)
    ping.py           /pangea/ping/1.0.0            round-trip times to neighbours

Each module frames with net/framing.py (size-capped reads) and opens streams with net/host.py (a deadline on
every ``new_stream``); what a protocol serves and where its results go is passed in (a block store, a capacity
directory, callbacks), so no module here knows the ``Peer``. The wire specs are in protocols/*.md.
"""
