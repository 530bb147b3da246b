"""The deterministic network simulator: the node's core objects on a virtual clock.

One seed fixes everything (topology, latencies, fault schedule, Byzantine roles, every peer's rng), so a run is
reproducible from ``(seed, options, code version)``. The simulated peers hold the very objects the trio node
holds (``CapacityDirectory``, ``AdvertPublisher``, ``Coordinator``, ``AdmissionControl``, ``TrustBook``,
``ReplayGuard``, ``RelayBook``) and exchange real encoded messages; only the network and the sandbox are
modelled.

Modules: ``loop`` (event heap and trace digest), ``network`` (regions, links, faults, gossip and DHT overlay),
``nat`` (peers behind NAT: relays, reservations, circuits),
``peer`` (a simulated peer: the node's compute service on a virtual clock, plus Byzantine behaviours),
``world`` (a whole run: build, workload, fault schedule, phases, metrics), ``checkers`` (invariants),
``scenarios`` (named experiments, tables, CSV and plots), ``bounds`` (analytic escape rates of lies per policy).
"""

from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.world import SimResult, Simulation

__all__ = ["SimConfig", "SimResult", "Simulation"]
