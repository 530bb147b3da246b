"""The node's logging: ``pangea_p2p.logs`` (moved there so that the sandbox, below the node, logs the same
structured events under the same settings). Kept as a name for the node's modules."""

from pangea_p2p.logs import ROOT, EventLogger, configure, get_logger

__all__ = ["ROOT", "EventLogger", "configure", "get_logger"]
