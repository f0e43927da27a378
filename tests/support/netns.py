"""Several hosts on one machine: network namespaces (`ip netns`) joined by a bridge in the root namespace.

    with Network(["h0", "h1", "lg0"]) as net:        # 10.A.B.1, .2, .3; the root namespace is .254
        process = net.start("h0", argv, log_path)     # argv runs inside h0's namespace
        url = f"http://{net.address('h0')}:8000"      # reachable from the root namespace and every host
        net.balance("lg0", vip, 8000, ["h0", "h1"])   # kube-proxy's way: DNAT per new connection
        net.cut("h0")                                 # its cable pulled: the link goes down

Needs root, iproute2 and iptables (the Makefile installs them for `make test`). Every host has one veth
pair: one end (`eth0`) in its namespace, the other in the bridge. Names carry a random tag and the
subnet is one the root namespace has no route into, so tests of other sessions on the machine never
meet. tests/engines/test_gpu_join.py makes namespaces too, but unprivileged ones (unshare --user
--net) without a link to the root namespace: Prometheus here runs in the root namespace and scrapes
every host, so these are root's `ip netns`, each with a link.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.support.real import missing

__all__ = ["Network", "require_netns"]


def require_netns() -> None:
    """Skip (fail under CI=true) unless this process may make namespaces, links and NAT rules."""
    if os.geteuid() != 0:
        missing("root", "network namespaces and veth links need root")
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            missing(tool, f"apt-get install {package}; `make test` does it as root")
    tag = f"lmprobe{uuid.uuid4().hex[:6]}"
    probe = subprocess.run(["ip", "netns", "add", tag], capture_output=True, text=True)
    if probe.returncode != 0:
        missing("ip netns", probe.stderr.strip())
    subprocess.run(["ip", "netns", "del", tag], capture_output=True)


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> str:
    """`10.A.B.`: a /24 the root namespace has no route into (another session's test, a real network)."""
    routes = _ip("-4", "route", "show", "table", "all")
    for _ in range(100):
        prefix = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}."
        if prefix not in routes:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet")


class Network:
    def __init__(self, hosts: list[str]) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.prefix = _free_subnet()
        self.hosts = list(hosts)
        self.bridge = f"lmbr{self.tag}"
        self.processes: list[subprocess.Popen] = []
        self._made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"lm{self.tag}{host}"

    def address(self, host: str) -> str:
        return f"{self.prefix}{self.hosts.index(host) + 1}"

    @property
    def root_address(self) -> str:
        return f"{self.prefix}254"

    def _link(self, host: str) -> str:
        return f"lm{self.tag}v{self.hosts.index(host)}"

    def __enter__(self) -> Network:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append("bridge")
            _ip("addr", "add", f"{self.root_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                self._add_host(host)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, host: str) -> None:
        namespace, link = self.namespace(host), self._link(host)
        _ip("netns", "add", namespace)
        self._made.append(namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
        _ip("link", "set", f"{link}p", "netns", namespace)
        _ip("-n", namespace, "link", "set", f"{link}p", "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "set", link, "master", self.bridge)
        _ip("link", "set", link, "up")

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self, host: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """argv inside the host's namespace, its output into log_path; stopped when the network closes."""
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *argv], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def run(self, host: str, argv: list[str]) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), *argv], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv} in {host}: {done.stderr.strip()}")
        return done.stdout

    def balance(self, host: str, vip: str, port: int, backends: list[str]) -> None:
        """Connections from `host` to vip:port go to the backends in turn, as kube-proxy's iptables mode
        spreads a Service's connections over its endpoints (here `nth`, so the turns are even)."""
        for index, backend in enumerate(backends):
            left = len(backends) - index
            match = (
                ["-m", "statistic", "--mode", "nth", "--every", str(left), "--packet", "0"]
                if left > 1
                else []
            )
            to = f"{self.address(backend)}:{port}"
            rule = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", vip, "--dport", str(port), *match]
            self.run(host, ["iptables", *rule, "-j", "DNAT", "--to-destination", to])

    def cut(self, host: str) -> None:
        """The host's link goes down (its cable pulled): nothing reaches it, nothing leaves it."""
        _ip("link", "set", self._link(host), "down")

    def mend(self, host: str) -> None:
        _ip("link", "set", self._link(host), "up")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for made in reversed(self._made):
            if made == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            else:  # deleting a namespace deletes its end of the veth pair, and so the pair
                subprocess.run(["ip", "netns", "del", made], capture_output=True)
        self._made.clear()
