"""Network namespaces for tests and benchmarks: a "public" network and "home" networks each behind its own NAT.

    root ns  --mgmt veth-- pub   (the public network: <wan>.N.1 towards router N; forwards between routers)
                            |
                      rN (router: <wan>.N.2 public side, 192.168.N.1 home side, nftables masquerade)
                            |
                      hN (home: 192.168.N.2, default route via rN)

Nothing from outside reaches a home namespace: the router masquerades outbound traffic and drops unsolicited
inbound packets (as a home router does; no reset either, which matters for hole punching). Each namespace
also gets a management veth to the root namespace (10.78.K.0/30), so the test process reaches the peers' HTTP
APIs there; no peer listens on it, and no other namespace routes to it. ``wan`` replaces 10.77 (a non-reserved
range makes the routers' public addresses look global; traffic still never leaves the namespaces).
``start_miniupnpd`` runs a UPnP IGD in a router. Everything (namespaces, daemons) is removed at exit.
Needs root (CAP_NET_ADMIN), ``ip`` (iproute2) and ``nft`` (nftables); ``unavailable()`` says what is missing.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_LABS = itertools.count()


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str:
    """Why namespaces with NAT cannot be made here ('' when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (Debian package {package}; .ci/run installs it)"
    probe = f"pgprobe{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace: {getattr(exc, 'stderr', '') or exc}".strip()
    try:
        _run("ip", "netns", "exec", probe, "nft", "add", "table", "ip", "nat")
    except subprocess.CalledProcessError as exc:
        return f"nftables does not work here: {exc.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return ""


def upnp_unavailable() -> str:
    """Why ``NatLab.start_miniupnpd`` cannot run here ('' when it can), on top of ``unavailable()``."""
    return "" if shutil.which("miniupnpd") else (
        "`miniupnpd` not found (Debian package miniupnpd-nftables; .ci/run installs it)")


@dataclass
class NatLab:
    """The namespaces of one test (see the module docstring); ``homes`` home networks."""

    homes: int = 2
    wan: str = "10.77"  # the public network's first two octets (``with_upnp`` wants a non-reserved one)
    tag: str = field(default_factory=lambda: f"p{os.getpid() % 10000}x{next(_LABS)}")
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _mgmt: int = 0

    @property
    def pub(self) -> str:
        return f"{self.tag}pub"

    def home(self, n: int) -> str:
        return f"{self.tag}h{n}"

    def router(self, n: int) -> str:
        return f"{self.tag}r{n}"

    def pub_ip(self, n: int) -> str:
        """The public network's address towards router ``n`` (where its peers listen)."""
        return f"{self.wan}.{n}.1"

    def router_ip(self, n: int) -> str:
        """Router ``n``'s public (external) address: what the public network sees its home peers come from."""
        return f"{self.wan}.{n}.2"

    @staticmethod
    def home_ip(n: int) -> str:
        return f"192.168.{n}.2"

    def mgmt_ip(self, ns: str) -> str:
        """The address of ``ns`` on its management link (where the test reaches its APIs)."""
        return f"10.78.{self.namespaces.index(ns) + 1}.2"

    def _ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.exec(name, "ip", "link", "set", "lo", "up")

    def exec(self, ns: str, *cmd: str) -> None:
        _run("ip", "netns", "exec", ns, *cmd)

    def _veth(self, a: str, a_if: str, a_ip: str, b: str | None, b_if: str, b_ip: str) -> None:
        _run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if)
        for ns, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            if ns is not None:
                _run("ip", "link", "set", ifname, "netns", ns)
                self.exec(ns, "ip", "addr", "add", ip, "dev", ifname)
                self.exec(ns, "ip", "link", "set", ifname, "up")
            else:
                self.root_links.append(ifname)
                _run("ip", "addr", "add", ip, "dev", ifname)
                _run("ip", "link", "set", ifname, "up")

    def _mgmt_link(self, ns: str) -> None:
        k = self.namespaces.index(ns) + 1
        self._veth(ns, f"{self.tag}m{k}", f"10.78.{k}.2/30", None, f"{self.tag}M{k}", f"10.78.{k}.1/30")

    def __enter__(self) -> NatLab:
        try:
            self._ns(self.pub)
            self._mgmt_link(self.pub)
            self.exec(self.pub, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for n in range(1, self.homes + 1):
                router, home = self.router(n), self.home(n)
                self._ns(router)
                self._ns(home)
                self._mgmt_link(home)
                self._veth(self.pub, f"{self.tag}p{n}", f"{self.pub_ip(n)}/24", router, f"{self.tag}rp{n}",
                           f"{self.router_ip(n)}/24")
                self._veth(router, f"{self.tag}rh{n}", f"192.168.{n}.1/24", home, f"{self.tag}h{n}",
                           f"{self.home_ip(n)}/24")
                self.exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                self.exec(router, "ip", "route", "add", "default", "via", self.pub_ip(n))
                self.exec(home, "ip", "route", "add", "default", "via", f"192.168.{n}.1")
                self.exec(router, "nft", "add", "table", "ip", "nat")
                self.exec(router, "nft", "add chain ip nat postrouting { type nat hook postrouting priority 100 ; }")
                self.exec(router, "nft", "add", "rule", "ip", "nat", "postrouting", "oifname", f"{self.tag}rp{n}",
                          "masquerade")
                # like a home router: unsolicited packets from outside are dropped, not answered with a reset
                self.exec(router, "nft", "add", "table", "inet", "filter")
                for hook in ("input", "forward"):
                    self.exec(router, "nft", f"add chain inet filter {hook} {{ type filter hook {hook} priority 0 ; }}")
                    self.exec(router, "nft", "add", "rule", "inet", "filter", hook, "iifname", f"{self.tag}rp{n}",
                              "ct", "state", "new", "drop")
        except BaseException:
            self.close()
            raise
        return self

    def start_miniupnpd(self, n: int, workdir: Path, allow: bool = True, ready_timeout_s: float = 10.0) -> Path:
        """Run miniupnpd (Debian's miniupnpd-nftables) in router ``n`` as the home network's UPnP IGD: it answers
        SSDP and SOAP on the home side and adds its DNAT and accept rules to chains of the router's nftables
        ruleset (``upnp_mappings`` lists them). ``allow``: grant mappings of ports 1024-65535 to the home
        network (False: refuse every mapping). Its config and log are in ``workdir``; the log's path is
        returned once it listens. It is stopped at ``close``. With a reserved public address (``wan`` 10.77, the
        default) miniupnpd says the IGD is not connected, reports no external address and maps nothing: a
        double NAT as it sees it. ``upnp_unavailable()`` says if miniupnpd is missing."""
        router, tag = self.router(n), self.tag
        self.exec(router, "nft", "add chain inet filter miniupnpd")
        self.exec(router, "nft", "insert rule inet filter forward jump miniupnpd")  # before the drop of new inbound
        self.exec(router, "nft", "add table inet upnpnat")
        self.exec(router, "nft", "add chain inet upnpnat prerouting_miniupnpd")
        self.exec(router, "nft", "add chain inet upnpnat postrouting_miniupnpd")
        for hook, priority in (("prerouting", -100), ("postrouting", 100)):
            self.exec(router, "nft", f"add chain inet upnpnat {hook} {{ type nat hook {hook} priority {priority} ; }}")
            self.exec(router, "nft", "add", "rule", "inet", "upnpnat", hook, "jump", f"{hook}_miniupnpd")
        workdir.mkdir(parents=True, exist_ok=True)
        conf, log, pid = workdir / "miniupnpd.conf", workdir / "miniupnpd.log", workdir / "miniupnpd.pid"
        rules = [f"allow 1024-65535 192.168.{n}.0/24 1024-65535"] if allow else []
        rules.append("deny 0-65535 0.0.0.0/0 0-65535")
        conf.write_text("\n".join([
            f"ext_ifname={tag}rp{n}", f"listening_ip={tag}rh{n}", "port=0", "enable_natpmp=no", "enable_upnp=yes",
            "secure_mode=yes", "system_uptime=yes", f"uuid=5e1f0c1e-0000-4000-8000-{n:012d}",
            f"lease_file={workdir / 'leases'}",
            "upnp_table_name=filter", "upnp_nat_table_name=upnpnat", "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd", *rules, ""]))
        with log.open("wb") as out:  # -d: stay in the foreground, log to stderr
            self.daemons.append(subprocess.Popen([*self.prefix(router), "miniupnpd", "-d", "-f", str(conf), "-P",
                                                  str(pid)], stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + ready_timeout_s
        while "HTTP listening on port" not in log.read_text(errors="replace"):
            if self.daemons[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"miniupnpd did not start in {router}: {log.read_text(errors='replace')[-800:]}")
            time.sleep(0.05)  # polling another process's log, bounded by the deadline
        return log

    def upnp_mappings(self, n: int) -> list[str]:
        """The port mappings miniupnpd holds in router ``n``'s nftables ruleset, as ``"<ext port> <ip>:<port>"``."""
        out = subprocess.run([*self.prefix(self.router(n)), "nft", "list", "chain", "inet", "upnpnat",
                              "prerouting_miniupnpd"], check=True, capture_output=True, text=True, timeout=30).stdout
        return [f"{m[0]} {m[1]}" for m in re.findall(r"dport (\d+) dnat ip to ([\d.]+:\d+)", out)]

    def close(self) -> None:
        for proc in self.daemons:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.daemons.clear()
        for link in self.root_links:  # at once (a namespace's veths otherwise go some time after it)
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        self.root_links.clear()
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its veths (and their peers)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prefix(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside ``ns``."""
        return ["ip", "netns", "exec", ns]
