"""The pure protocol core of pangea_p2p.

Everything that decides — the capacity directory, scheduling, delegation, verification, voting, trust — lives
here as plain objects that take events, the current time (``now: float``) and an rng (``random.Random``) as
parameters and return effects. Nothing in this package awaits, reads a clock, touches a socket or the file
system, or imports trio, libp2p, asyncio, socket, time or os: ``tests/test_architecture.py`` enforces it.
Two drivers run these objects unchanged: the node (``pangea_p2p.node``, trio + py-libp2p) and the simulator
(``pangea_p2p.sim``, a seeded discrete-event loop).
"""
