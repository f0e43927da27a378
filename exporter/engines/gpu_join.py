"""Join engine targets to the GPUs their processes occupy.

An engine is a process tree: its root is the outermost process that is an engine process (recognised as
the host collector does, by program name or `--engine-process-pattern`: `text-generation-launcher`, the
`vllm` API server, `llama-server`, ...), and every descendant belongs to it (vLLM's engine cores, SGLang's
schedulers, TGI's router and shards, Ollama's runners). NVML's running compute processes (host pids, from
the GPU collector's latest snapshot) whose pid is in the tree give the GPUs and the VRAM the engine holds.

Which tree serves a target, in order:
1. `process` (per-target regex, configured): the tree rooted at the outermost process whose command line
   matches it, among the ancestors of the GPU processes. Nothing else is tried.
2. The process that owns the listening socket of the target's port is the server; its tree is the engine
   (found by walking up from the listener, so TGI's router, a sibling of the shards, leads to the
   launcher). For a target in the exporter's own network namespace (loopback, `localhost`, the host name,
   a local address) psutil finds the listener; a `docker-proxy` listener leads on to the container address
   and port it forwards to. For any other address (another container: `http://engine:8000`), the sockets of
   the network namespace of each GPU process are read from `/proc/<pid>/net/tcp{,6}` (with `pid: host`
   those files show that process's own namespace): a namespace that owns the address the exporter's last
   connection went to and listens on the port serves the target; the socket's owner is then looked up in
   `/proc/<pid>/fd` where permitted, else all GPU processes of that namespace must belong to one tree.
3. Only for a target on this host that answered this scrape as a known kind: the host's only engine tree
   of that kind, if it holds GPU processes (never a tree another target already resolved to).
More than one candidate at any step is ambiguous: no join, `llm_engine_gpu_join_ambiguous` 1 and one log
line. No GPU processes, no process scans; a resolution is reused while its root lives (rechecked every
30 s).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import psutil

from exporter.collectors.host import EngineMatcher

log = logging.getLogger("exporter.engines")
RESCAN_SECONDS = 30.0
MAX_TREE_PIDS = 4096
MAX_FD_SCAN_PIDS = 256
PROC = Path("/proc")
_LISTEN = "0A"


class GpuProcessLike(Protocol):
    """exporter.collectors.gpu.GpuProcess, by shape."""

    gpu: str
    uuid: str
    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuUse:
    target: str
    gpu: str
    uuid: str
    memory_bytes: int | None  # None when NVML could not tell for any of its processes


@dataclass(frozen=True)
class JoinTarget:
    name: str
    url: str
    engine_kind: str | None = None  # configured or discovered; None while unknown
    process: str | None = None  # configured command-line regex
    peer: tuple[str, int] | None = None  # the address the exporter's last connection to it went to
    answered: bool = False  # the target answered this round's scrape


@dataclass(frozen=True)
class Resolution:
    root: int | None = None  # the engine tree's root pid
    method: str = ""  # process, listener, namespace, kind
    candidates: tuple[int, ...] = ()  # the roots that made it ambiguous

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


# --- processes ------------------------------------------------------------------------------------------


class ProcessTable:
    """One pass over the process list: parents, children, start times; command lines read on demand."""

    def __init__(self, cmdlines: dict[tuple[int, float], list[str]]) -> None:
        self.parent: dict[int, int] = {}
        self.children: dict[int, list[int]] = {}
        self.started: dict[int, float] = {}
        self._cmdlines = cmdlines
        for process in psutil.process_iter(["ppid", "create_time"]):
            pid, info = process.pid, process.info
            self.parent[pid] = info["ppid"] or 0
            self.started[pid] = info["create_time"] or 0.0
            self.children.setdefault(self.parent[pid], []).append(pid)

    def __contains__(self, pid: int) -> bool:
        return pid in self.parent

    def cmdline(self, pid: int) -> list[str]:
        key = (pid, self.started.get(pid, 0.0))
        if key not in self._cmdlines:
            try:
                self._cmdlines[key] = psutil.Process(pid).cmdline()
            except (psutil.Error, OSError):
                self._cmdlines[key] = []
        return self._cmdlines[key]

    def lineage(self, pid: int) -> list[int]:
        """The pid and its ancestors, nearest first (pid 0 and loops excluded)."""
        chain: list[int] = []
        while pid in self.parent and pid not in chain and pid > 0:
            chain.append(pid)
            pid = self.parent[pid]
        return chain

    def tree(self, root: int) -> set[int]:
        """The root and all its descendants (capped)."""
        tree: set[int] = set()
        stack = [root]
        while stack and len(tree) < MAX_TREE_PIDS:
            pid = stack.pop()
            if pid not in tree:
                tree.add(pid)
                stack.extend(self.children.get(pid, []))
        return tree


# --- sockets and addresses, from /proc ------------------------------------------------------------------


def listening_pids(port: int) -> set[int]:
    """Pids with a TCP socket listening on `port` in our own network namespace (all we may see)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {
        c.pid
        for c in connections
        if c.pid is not None and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


def namespace_listeners(pid: int, port: int) -> dict[int, str]:
    """Listening sockets on `port` in the network namespace of `pid`: inode -> bound address."""
    found: dict[int, str] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = (PROC / str(pid) / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and fields[9].isdigit():
                found[int(fields[9])] = _proc_address(address)
    return found


def namespace_addresses(pid: int) -> set[str]:
    """The addresses the network namespace of `pid` owns (IPv4 LOCAL routes, IPv6 interface addresses)."""
    addresses: set[str] = set()
    try:
        lines = (PROC / str(pid) / "net" / "fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for line, following in itertools.pairwise(lines):
        candidate = line.strip().removeprefix("|-- ")
        if "host LOCAL" in following and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", candidate):
            addresses.add(candidate)
    try:
        lines = (PROC / str(pid) / "net" / "if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            addresses.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return addresses


def socket_inodes(pid: int) -> set[int] | None:
    """Socket inodes the process holds open; None when we may not look (another user, no privileges)."""
    directory = PROC / str(pid) / "fd"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    except OSError:
        return None
    inodes: set[int] = set()
    for name in names:
        try:
            target = os.readlink(directory / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _proc_address(text: str) -> str:
    """/proc/net/tcp{,6} hex address (32-bit words in host order, little-endian here) -> an IP string."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _same_address(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    x = x.ipv4_mapped or x if isinstance(x, ipaddress.IPv6Address) else x
    y = y.ipv4_mapped or y if isinstance(y, ipaddress.IPv6Address) else y
    return x == y


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # not an address we can match to a namespace


def _accepts(bound: str, peer: str) -> bool:
    return bound in ("0.0.0.0", "::") or _same_address(bound, peer)


# --- URLs ------------------------------------------------------------------------------------------------


def target_port(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


def local_port(url: str) -> int | None:
    """The port of a target in this host's (our own) network namespace, or None for any other."""
    port = target_port(url)
    return port if port is not None and _is_local_host(urlsplit(url).hostname or "") else None


def _is_local_host(host: str) -> bool:
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: no lookups on the scrape path (the peer address says where it went)
    if address.is_loopback or address.is_unspecified:
        return True
    return str(address) in _local_addresses()


def _local_addresses() -> set[str]:
    try:
        return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    except (psutil.Error, OSError):
        return set()


# --- the join --------------------------------------------------------------------------------------------


@dataclass
class _Cached:
    key: tuple
    resolution: Resolution
    root_started: float
    at: float


@dataclass
class GpuJoin:
    gpu_processes: Callable[[], Sequence[GpuProcessLike]]
    matcher: EngineMatcher = field(default_factory=EngineMatcher)
    listeners: Callable[[int], set[int]] = listening_pids
    clock: Callable[[], float] = time.monotonic
    ambiguous: set[str] = field(default_factory=set)  # targets whose join was ambiguous in the last pass
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _logged: dict[str, tuple] = field(default_factory=dict)
    _cmdlines: dict[tuple[int, float], list[str]] = field(default_factory=dict)

    def join(self, targets: Iterable[JoinTarget]) -> list[GpuUse]:
        """The GPUs each target's engine tree occupies."""
        targets = list(targets)
        processes = list(self.gpu_processes())
        self.ambiguous = set()
        if not processes:
            return []  # no GPU work anywhere: skip the process scans entirely
        table = ProcessTable(self._cmdlines)
        gpu_pids = {p.pid for p in processes if p.pid in table}
        roots = frozenset(self._root(pid, table) for pid in gpu_pids)
        resolutions = {t.name: self._cached_resolve(t, table, gpu_pids, roots) for t in targets}
        _refuse_shared_guesses(resolutions)
        uses: list[GpuUse] = []
        for target in targets:
            resolution = resolutions[target.name]
            self._log(target, resolution, table)
            if resolution.ambiguous:
                self.ambiguous.add(target.name)
            elif resolution.root is not None:
                uses.extend(gpu_uses(target.name, table.tree(resolution.root), processes))
        self._cmdlines = {k: v for k, v in self._cmdlines.items() if table.started.get(k[0]) == k[1]}
        return uses

    def _cached_resolve(
        self, target: JoinTarget, table: ProcessTable, gpu_pids: set[int], roots: frozenset[int]
    ) -> Resolution:
        key = (target, roots)
        cached, now = self._cache.get(target.name), self.clock()
        if cached is not None and cached.key == key and now - cached.at < RESCAN_SECONDS:
            root = cached.resolution.root
            if root is None or table.started.get(root) == cached.root_started:
                return cached.resolution
        resolution = self._resolve(target, table, gpu_pids, roots)
        started = table.started.get(resolution.root, 0.0) if resolution.root is not None else 0.0
        self._cache[target.name] = _Cached(key, resolution, started, now)
        return resolution

    def _resolve(
        self, target: JoinTarget, table: ProcessTable, gpu_pids: set[int], roots: frozenset[int]
    ) -> Resolution:
        if target.process:
            pattern = re.compile(target.process)
            matched = {self._outermost(pid, table, pattern) for pid in gpu_pids} - {None}
            return _pick(matched, "process")  # type: ignore[arg-type]
        port = target_port(target.url)
        if port is None:
            return Resolution()
        peer = target.peer[0] if target.peer is not None else None
        on_host = local_port(target.url) is not None or (
            peer is not None and any(_same_address(peer, a) for a in _local_addresses())
        )
        if on_host:
            listeners = self.listeners(port)
            found = self._from_listeners(listeners, table, gpu_pids)
            if found.root is not None or found.ambiguous:
                return found
            for address, container_port in _published(listeners, table):  # docker-proxy -> the container
                found, _ = self._from_namespaces(container_port, address, table, gpu_pids, on_host)
                if found.root is not None or found.ambiguous:
                    return found
        if peer is not None and not _is_loopback(peer):
            found, on_host = self._from_namespaces(port, peer, table, gpu_pids, on_host)
            if found.root is not None or found.ambiguous:
                return found
        if on_host and target.answered and target.engine_kind:
            return self._only_engine_of_kind(target.engine_kind, table, roots)
        return Resolution()

    def _only_engine_of_kind(self, kind: str, table: ProcessTable, gpu_roots: frozenset[int]) -> Resolution:
        """The target answered as `kind` from this host, but no socket led to it: if the host runs exactly
        one engine of that kind (with or without GPUs) and it holds GPU processes, that is the one."""
        same_kind = {self._root(pid, table) for pid in list(table.parent) if self._kind(pid, table) == kind}
        if len(same_kind) == 1 and not same_kind <= gpu_roots:
            return Resolution()  # the only one holds no GPU: nothing to join
        return _pick(same_kind, "kind")

    def _from_listeners(
        self, listeners: Iterable[int], table: ProcessTable, gpu_pids: set[int]
    ) -> Resolution:
        """The engine trees of the listening processes that hold GPU processes."""
        roots = {self._root(pid, table) for pid in listeners if pid in table}
        return _pick({root for root in roots if table.tree(root) & gpu_pids}, "listener")

    def _from_namespaces(
        self, port: int, peer: str, table: ProcessTable, gpu_pids: set[int], on_host: bool
    ) -> tuple[Resolution, bool]:
        """GPU processes whose network namespace owns `peer` and listens on `port`, then the socket owner."""
        matched: set[int] = set()
        inodes: set[int] = set()
        for pid in sorted(gpu_pids):
            owns = any(_same_address(peer, address) for address in namespace_addresses(pid))
            on_host = on_host or owns
            listening = {i for i, bound in namespace_listeners(pid, port).items() if _accepts(bound, peer)}
            if owns and listening:
                matched.add(pid)
                inodes.update(listening)
        on_host = on_host or any(_same_address(peer, a) for a in namespace_addresses(1))
        if not matched:
            return Resolution(), on_host
        owners = self._socket_owners(inodes, matched, table)
        if owners:
            return self._from_listeners(owners, table, gpu_pids), on_host
        return _pick({self._root(pid, table) for pid in matched}, "namespace"), on_host

    def _socket_owners(self, inodes: set[int], near: set[int], table: ProcessTable) -> set[int]:
        """Processes holding one of `inodes`, looked for around `near` (their engine trees and ancestors)."""
        scan: list[int] = []
        for pid in sorted(near):
            scan.extend(table.lineage(pid))
            scan.extend(sorted(table.tree(self._root(pid, table))))
        owners: set[int] = set()
        for pid in list(dict.fromkeys(scan))[:MAX_FD_SCAN_PIDS]:
            held = socket_inodes(pid)
            if held and held & inodes:
                owners.add(pid)
        return owners

    def _root(self, pid: int, table: ProcessTable) -> int:
        """The outermost ancestor-or-self that is an engine process, else the process itself."""
        root = pid
        for ancestor in table.lineage(pid):
            if self.matcher.kind(table.cmdline(ancestor)) is not None:
                root = ancestor
        return root

    def _kind(self, pid: int, table: ProcessTable) -> str | None:
        return self.matcher.kind(table.cmdline(pid))

    @staticmethod
    def _outermost(pid: int, table: ProcessTable, pattern: re.Pattern[str]) -> int | None:
        found = None
        for ancestor in table.lineage(pid):
            if pattern.search(" ".join(table.cmdline(ancestor))):
                found = ancestor
        return found

    def _log(self, target: JoinTarget, resolution: Resolution, table: ProcessTable) -> None:
        state = (resolution.root, resolution.method, resolution.candidates)
        if self._logged.get(target.name) == state:
            return
        self._logged[target.name] = state
        if resolution.ambiguous:
            described = ", ".join(
                f"{pid} ({' '.join(table.cmdline(pid))[:80]})" for pid in resolution.candidates
            )
            log.warning(
                "engine target %s: GPU join is ambiguous (%s: %s); no join. Set the target's `process` "
                "to the engine's command line", target.name, resolution.method, described,
            )  # fmt: skip
        elif resolution.root is not None:
            log.info(
                "engine target %s joined to the process tree of pid %d (%s)",
                target.name, resolution.root, resolution.method,
            )  # fmt: skip


def _published(listeners: Iterable[int], table: ProcessTable) -> list[tuple[str, int]]:
    """(container address, container port) of docker-proxy listeners (a port published by Docker)."""
    published = []
    for pid in sorted(listeners):
        argv = table.cmdline(pid) if pid in table else []
        if argv and os.path.basename(argv[0]) == "docker-proxy":
            options = dict(zip(argv[1::2], argv[2::2], strict=False))
            address, port = options.get("-container-ip"), options.get("-container-port", "")
            if address and port.isdigit():
                published.append((address, int(port)))
    return published


def _refuse_shared_guesses(resolutions: dict[str, Resolution]) -> None:
    """A tree picked by kind alone that another target also resolves to is not known to be either's."""
    claims: dict[int, list[str]] = {}
    for name, resolution in resolutions.items():
        if resolution.root is not None:
            claims.setdefault(resolution.root, []).append(name)
    for root, names in claims.items():
        if len(names) > 1:
            for name in names:
                if resolutions[name].method == "kind":
                    resolutions[name] = Resolution(None, "kind", (root, root))


def _pick(roots: set[int], method: str) -> Resolution:
    if len(roots) == 1:
        return Resolution(next(iter(roots)), method)
    if len(roots) > 1:
        return Resolution(None, method, tuple(sorted(roots)))
    return Resolution()


def gpu_uses(target: str, tree: set[int], processes: Iterable[GpuProcessLike]) -> list[GpuUse]:
    memory: dict[tuple[str, str], int | None] = {}
    for process in processes:
        if process.pid not in tree:
            continue
        key = (process.gpu, process.uuid)
        held = memory.get(key)
        if process.used_memory_bytes is not None:
            held = (held or 0) + process.used_memory_bytes
        memory[key] = held
    return [GpuUse(target, gpu, uuid, held) for (gpu, uuid), held in sorted(memory.items())]
