"""The Python SDK: a client of a peer's local HTTP API and the split / execute / merge job DSL."""

from pangea_p2p.sdk import splits as splits
from pangea_p2p.sdk.client import Client as Client
from pangea_p2p.sdk.job import Job as Job
from pangea_p2p.sdk.job import JobFailed as JobFailed
from pangea_p2p.sdk.job import JobHandle as JobHandle
from pangea_p2p.sdk.job import Limits as Limits
from pangea_p2p.sdk.job import Progress as Progress
from pangea_p2p.sdk.job import UncheckedResultWarning as UncheckedResultWarning
