"""The py-libp2p adapter: host construction (with the workarounds py-libp2p 0.8.1 needs), framed stream
protocols with size caps, the DHT and gossipsub set-up. Real I/O lives here and in ``pangea_p2p.node``."""
