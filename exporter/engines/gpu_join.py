"""Join engine targets to the GPUs their processes occupy.

For a target on this host, the engine's server is the process listening on the target's port; the
engine is that process and all its descendants (vLLM's engine cores, SGLang's schedulers, Ollama's
runners are children of the listening server). NVML's running compute processes whose pid is in that
tree give the GPUs and the VRAM the engine holds. Remote targets, containers in another PID namespace
and listeners we may not see (another user's, without privileges) simply get no join series.

The process lookups are injectable (`listeners`, `tree`) so the join is testable with fakes for the
GPU side and real processes.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import psutil

RESCAN_SECONDS = 30.0
MAX_TREE_PIDS = 4096


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


def listening_pids(port: int) -> set[int]:
    """Pids with a TCP socket listening on `port` (all we may see; empty without permission)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {
        c.pid
        for c in connections
        if c.pid is not None and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


def process_tree(pids: Iterable[int]) -> set[int]:
    """The pids and all their descendants that still exist (capped)."""
    tree: set[int] = set()
    for pid in pids:
        try:
            process = psutil.Process(pid)
            tree.add(pid)
            tree.update(child.pid for child in process.children(recursive=True))
        except psutil.Error:
            continue
        if len(tree) >= MAX_TREE_PIDS:
            break
    return tree


def local_port(url: str) -> int | None:
    """The port of a target on this host, or None for a remote one."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    if port is None:
        return None
    return port if _is_local_host(host) else None


def _is_local_host(host: str) -> bool:
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: no lookups on the scrape path
    if address.is_loopback or address.is_unspecified:
        return True
    return str(address) in _local_addresses()


def _local_addresses() -> set[str]:
    try:
        return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    except (psutil.Error, OSError):
        return set()


class GpuJoin:
    def __init__(
        self,
        gpu_processes: Callable[[], Sequence[GpuProcessLike]],
        listeners: Callable[[int], set[int]] = listening_pids,
        tree: Callable[[Iterable[int]], set[int]] = process_tree,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gpu_processes, self._listeners, self._tree, self._clock = gpu_processes, listeners, tree, clock
        self._listener_cache: dict[int, tuple[set[int], float]] = {}

    def join(self, targets: Iterable[tuple[str, str]]) -> list[GpuUse]:
        """(target name, URL) pairs -> the GPUs each local target's process tree occupies."""
        processes = list(self._gpu_processes())
        if not processes:
            return []  # no GPU work anywhere: skip the process scans entirely
        uses: list[GpuUse] = []
        for name, url in targets:
            port = local_port(url)
            if port is None:
                continue
            servers = self._servers(port)
            if servers:
                uses.extend(gpu_uses(name, self._tree(servers), processes))
        return uses

    def _servers(self, port: int) -> set[int]:
        """Listening pids, cached while one lives; a port with no visible listener is rescanned slowly."""
        cached = self._listener_cache.get(port)
        now = self._clock()
        if cached is not None:
            pids, scanned_at = cached
            alive = {pid for pid in pids if psutil.pid_exists(pid)}
            if alive:
                return alive
            if not pids and now - scanned_at < RESCAN_SECONDS:
                return set()
        pids = self._listeners(port)
        self._listener_cache[port] = (pids, now)
        return pids


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
