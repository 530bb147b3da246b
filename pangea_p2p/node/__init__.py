"""The trio driver of a peer (``open_peer``), its configuration, key file, local HTTP API and the CLI."""
