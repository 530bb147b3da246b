"""Start-up time of the `pangea` client commands, against bare Python started the same way.

    python -c pass                              the baseline: the interpreter alone
    pangea job status --help                    parsing only
    pangea job status J --api HOST:PORT         a whole client command, answered by a local HTTP server
    python -c "import pangea_p2p.node.peer"     what a client command no longer loads (py-libp2p, trio)
        target: `pangea job status J` <= 0.2 s

Run: .venv/bin/python benchmarks/bench_cli.py [--quick]. Each is a fresh process; prints the fastest and the
median of the runs (the fastest is the least disturbed by other work on the machine), and the ratio of the
fastest to the baseline's. The answering server is the standard library's, on 127.0.0.1, in this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET_S = 0.2
STATUS = {"job_id": "0123456789abcdef", "state": "running", "reason": "", "tasks_total": 4, "elapsed_s": 1.5,
          "fuel_used": 7, "eta_s": None, "progress": {"done": 1, "running": 1, "verifying": 0, "pending": 2,
                                                      "failed": 0}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        doc = {"jobs": [STATUS]} if self.path == "/v1/jobs" else STATUS
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def timed(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=120)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 runs of each instead of 15")
    runs = 5 if parser.parse_args().quick else 15
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"127.0.0.1:{server.server_address[1]}"
    py = sys.executable
    cases = [
        ("python -c pass (baseline)", [py, "-c", "pass"]),
        ("pangea job status --help", [py, "-m", "pangea_p2p", "job", "status", "--help"]),
        ("pangea job status J (answered)", [py, "-m", "pangea_p2p", "job", "status", "--api", api, "0123"]),
        ("import pangea_p2p.node.peer", [py, "-c", "import pangea_p2p.node.peer"]),
    ]
    try:
        results = {name: timed(argv, runs) for name, argv in cases}
    finally:
        server.shutdown()
        server.server_close()
    base = min(results[cases[0][0]])
    print(f"{'command':34} {'fastest':>9} {'median':>9} {'x baseline':>11}")
    for name, times in results.items():
        print(f"{name:34} {min(times) * 1e3:7.0f}ms {statistics.median(times) * 1e3:7.0f}ms "
              f"{min(times) / base:10.1f}x")
    status_s = min(results[cases[2][0]])
    verdict = "met" if status_s <= TARGET_S else "MISSED"
    print(f"target: pangea job status <= {TARGET_S:g} s: {verdict} ({status_s:.3f} s fastest of {runs})")
    return 0 if status_s <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
