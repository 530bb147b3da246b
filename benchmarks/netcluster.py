"""A worker process of the network benchmark: K peers in one trio loop, controlled over stdin/stdout.

    python benchmarks/netcluster.py --base DIR --peers K --bootstrap ADDR [--set key=value ...]

Prints ``READY <n>`` when its peers are up. Commands on stdin, one per line:
``COUNT``            -> ``COUNT <min directory size over my peers>``
``STATS``            -> ``STATS <advert rejections by reason, summed over my peers>``
``WATCH <peer id>``  -> ``SEEN <peer id>`` as soon as every one of my peers lists that peer's advert
``IDS``              -> ``IDS <peer id> ...`` (my peers)
``CPU``              -> ``CPU <seconds of CPU this process used so far>``
``QUIT``             -> stops the peers and exits
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from pangea_p2p.logs import configure
from pangea_p2p.node.config import parse_override
from pangea_p2p.node.peer import Peer, open_peer
from pangea_p2p.testing import local_config, wait_for


async def watch(peers: list[Peer], peer_id: str) -> None:
    await wait_for(lambda: all(peer_id in p.directory.peers(time.time()) for p in peers), 120, poll_s=0.002)
    print(f"SEEN {peer_id}", flush=True)


async def main(args: argparse.Namespace) -> None:
    extra: dict[str, Any] = {k.replace(".", "__"): v for k, v in map(parse_override, args.set)}
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        peers = []
        for i in range(args.peers):
            cfg = local_config(Path(args.base) / f"p{i}", [args.bootstrap], **extra)
            peers.append(await stack.enter_async_context(open_peer(cfg)))
        print(f"READY {len(peers)}", flush=True)
        stdin = trio.wrap_file(sys.stdin)
        async for line in stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "COUNT":
                print(f"COUNT {min(len(p.directory.peers(time.time())) for p in peers)}", flush=True)
            elif cmd == "STATS":
                total: dict[str, int] = {}
                for p in peers:
                    for reason, n in p.directory.rejections.items():
                        total[str(reason)] = total.get(str(reason), 0) + n
                print(f"STATS {total}", flush=True)
            elif cmd == "MESH":
                print(f"MESH {[p.mesh_peer_count() for p in peers]} {[p.topic_peer_count() for p in peers]}",
                      flush=True)
            elif cmd == "IDS":
                print(f"IDS {' '.join(p.peer_id for p in peers)}", flush=True)
            elif cmd == "CPU":
                print(f"CPU {time.process_time()}", flush=True)
            elif cmd == "WATCH":
                nursery.start_soon(watch, peers, arg)
            elif cmd == "QUIT":
                break
        nursery.cancel_scope.cancel()  # the watches; then the stack stops the peers


if __name__ == "__main__":
    configure("error")
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--peers", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--set", action="append", default=[])
    trio.run(main, parser.parse_args())
