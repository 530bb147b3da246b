"""Generated protobuf modules for the wire messages specified in protocols/ (regenerate with `make protos`).

Only the codec modules next to the protocol logic import these; the rest of the code sees domain dataclasses.
"""
