"""Peer network benchmarks (issue 2). Prints figures; not a test.

1. Join: time from starting peer N+1 (bootstrap address of peer 0 only) to its advert being in the directory of
   every other peer, for N = 8 and N = 32 peers already running on 127.0.0.1 (8 peers per OS process).
2. Small-message round trip on pangea's ping protocol (/pangea/ping/1.0.0: framed protobuf) versus a bare
   py-libp2p stream echo (write + read(n), no framing, no encoding) between the same two hosts, in the same
   run. Target ratio <= 1.5.

    .venv/bin/python benchmarks/bench_network.py [--sizes 8,32] [--joins 3] [--rtts 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from pangea_p2p.net import host as hostlib
from pangea_p2p.node.peer import Peer, open_peer
from pangea_p2p.testing import local_config, open_network, wait_for

BARE = TProtocol("/bench/bare-echo/1.0.0")


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    med = statistics.median(xs) * 1000
    return f"median {med:.1f} ms (min {xs[0] * 1000:.1f}, max {xs[-1] * 1000:.1f}, n={len(xs)})"


# Peers are spread over worker processes (benchmarks/netcluster.py, PEERS_PER_PROCESS each) so that both
# cores work and no single trio loop carries 32 peers' gossip. 33 py-libp2p peers on 2 cores saturate the CPU
# with gossip at the default network-wide advert rate (10/s: each advert costs every peer ~6 RPCs), which is
# not what a device running one peer sees; so the benchmark caps the network at 1 advert/s. The measured
# advert is the newcomer's first one, which does not wait for the interval.
PEERS_PER_PROCESS = 8
SETTINGS = {
    "capacity.advert_interval_s": 10.0,
    "capacity.advert_ttl_s": 30.0,
    "capacity.network_adverts_per_s_max": 1.0,
}
HERE = Path(__file__).resolve().parent


class Worker:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""

    async def line(self) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self.proc.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError("benchmark worker exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode().strip()

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(text.encode() + b"\n")


async def start_workers(n_peers: int, boot: str, base: Path) -> list[Worker]:
    workers = []
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    for w in range(0, n_peers, PEERS_PER_PROCESS):
        count = min(PEERS_PER_PROCESS, n_peers - w)
        cmd = [sys.executable, str(HERE / "netcluster.py"), "--base", str(base / f"w{w}"), "--peers", str(count),
               "--bootstrap", boot, *sets]
        proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        workers.append(Worker(proc))
        assert (await workers[-1].line()).startswith("READY")
    return workers


async def converged(workers: list[Worker], want: int) -> bool:
    counts = []
    for w in workers:
        await w.send("COUNT")
        counts.append(int((await w.line()).split()[1]))
    return min(counts) >= want


async def join_times(n: int, joins: int, base: Path) -> list[float]:
    out: list[float] = []
    extra = {k.replace(".", "__"): v for k, v in SETTINGS.items()}
    async with open_peer(local_config(base / f"net{n}-p0", **extra)) as first:
        boot = first.addrs()[0]
        workers = await start_workers(n - 1, boot, base / f"net{n}")
        try:
            t0 = trio.current_time()
            with trio.fail_after(300):
                while not (len(first.directory) >= n and await converged(workers, n)):  # noqa: ASYNC110
                    await trio.sleep(0.5)  # polling other processes' directories
            print(f"  {n} peers up ({len(workers)} worker processes + this one); every advert in every "
                  f"directory {trio.current_time() - t0:.1f} s after the last start")
            for j in range(joins):
                start = trio.current_time()
                async with open_peer(local_config(base / f"net{n}-join{j}", [boot], **extra)) as newcomer:
                    for w in workers:
                        await w.send(f"WATCH {newcomer.peer_id}")
                    with trio.fail_after(120):
                        for w in workers:
                            assert (await w.line()) == f"SEEN {newcomer.peer_id}"
                        await wait_for(lambda: newcomer.peer_id in first.directory.peers(time.time()), 60)
                    out.append(trio.current_time() - start)
        finally:
            for w in workers:
                with trio.move_on_after(10):
                    await w.send("QUIT")
                    await w.proc.wait()
                if w.proc.returncode is None:
                    w.proc.kill()
    return out


async def rtts(base: Path, count: int) -> tuple[list[float], list[float]]:
    async with open_network(2, base / "rtt") as (a, b):
        await wait_for(lambda: b.peer_id in a.connected_peers(), 30)
        pid = ID.from_base58(b.peer_id)

        async def bare_echo(stream: object) -> None:
            try:
                while data := await stream.read(8):  # type: ignore[attr-defined]
                    await stream.write(data)  # type: ignore[attr-defined]
            except Exception:
                pass

        b.host.set_stream_handler(BARE, bare_echo)  # type: ignore[arg-type]
        pangea, bare = [], []
        for _ in range(3):  # interleave rounds so drift in machine load hits both alike
            pangea += await ping_rounds(a, pid, count // 3)
            bare += await bare_rounds(a, pid, count // 3)
        return pangea, bare


async def ping_rounds(a: Peer, pid: ID, count: int) -> list[float]:
    from pangea_p2p.net.framing import FrameReader, write_frame
    from pangea_p2p.node.protocols.ping import PING_BYTES_MAX, PING_PROTOCOL
    from pangea_p2p.wire import ping_pb2

    stream = await hostlib.open_stream(a.host, pid, [PING_PROTOCOL])
    reader = FrameReader(stream, PING_BYTES_MAX)
    samples = []
    for i in range(count):
        msg = ping_pb2.Ping(nonce=i.to_bytes(8, "big")).SerializeToString()
        t0 = time.perf_counter()
        await write_frame(stream, msg)
        assert await reader.read_frame() == msg
        samples.append(time.perf_counter() - t0)
    await stream.close()
    return samples


async def bare_rounds(a: Peer, pid: ID, count: int) -> list[float]:
    stream = await a.host.new_stream(pid, [BARE])
    samples = []
    for i in range(count):
        msg = i.to_bytes(8, "big")
        t0 = time.perf_counter()
        await stream.write(msg)
        got = b""
        while len(got) < 8:
            got += await stream.read(8 - len(got))
        assert got == msg
        samples.append(time.perf_counter() - t0)
    await stream.close()
    return samples


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for n in args.sizes:
            times = await join_times(n, args.joins, base)
            print(f"join with {n} peers running: advert of peer {n + 1} in all {n} directories: {fmt(times)}")
        pangea, bare = await rtts(base, args.rtts)
        p50, b50 = statistics.median(pangea), statistics.median(bare)
        print(f"64-bit round trip, pangea ping protocol (framed): {fmt(pangea)}")
        print(f"64-bit round trip, bare py-libp2p stream echo:    {fmt(bare)}")
        print(f"ratio pangea / bare (median): {p50 / b50:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    parser.add_argument("--joins", type=int, default=3)
    parser.add_argument("--rtts", type=int, default=3000)
    trio.run(main, parser.parse_args())
