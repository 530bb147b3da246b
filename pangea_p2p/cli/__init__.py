"""The ``pangea`` command line: it parses arguments, calls the node, the SDK or the simulator, and prints.

Nothing here decides anything about the network: ``pangea node`` runs the peer of ``pangea_p2p.node``, the
client commands call a running peer's HTTP API through ``pangea_p2p.sdk``, ``pangea sim`` runs
``pangea_p2p.sim``. The entry point is ``pangea_p2p.cli.main:main`` (the ``pangea`` script and
``python -m pangea_p2p``).

A command group is one module of this package with two functions, listed once in ``main.GROUPS``::

    def add_parser(sub: Subparsers) -> None:   # add its command(s) to `pangea` (sub.add_parser(...))
        ...
    def run(args: argparse.Namespace) -> int:  # run one of them once parsed; the exit status
        ...

``main`` sends every command a group added to that group's ``run``. Errors: raise a ``PangeaError`` (a
``ConfigError`` naming the option for bad usage or configuration); ``main`` prints it as one line
``pangea: error: ...`` and exits 2 for a ``ConfigError``, 1 for any other. ``common`` has what several groups
share: the ``--data-dir`` / ``--api`` / ``--json`` options and the API client they select; ``output`` how they
print (``--json`` documents, tables with headers, no binary on a terminal); ``parsing`` a parser whose defaults
are computed only when it is used. A group imports what only its commands need inside ``run``.
"""
