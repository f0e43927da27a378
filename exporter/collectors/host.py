"""Host collector (psutil): CPU, load, memory, swap, disk and network, plus engine processes.

Engine processes (vLLM, SGLang, llama-server, ...) are recognised by their program name in a background
scan (reading every process's command line is too slow for a scrape); each scrape then reads CPU seconds,
RSS and threads of the known process trees only. CPU seconds of a tree are the sum over its live members
of their own and their reaped children's times, so the counter does not drop when a worker exits.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.process_labels import POD_LABELS, ProcessLabels, command_label
from exporter.config import EngineProcessPattern
from exporter.engines.registry import PROCESS_NAMES
from exporter.pacer import Pacer

log = logging.getLogger("exporter.host")

# Partitions and virtual devices, as node_exporter's default --collector.diskstats.device-exclude.
_DISK_EXCLUDE = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")
_PYTHON = re.compile(r"^python[0-9.]*$")
_PYTHON_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}
SCAN_INTERVAL_SECONDS = 5.0
# CPU utilization is averaged over this window: Prometheus's scrape interval in prometheus/prometheus.yml
CPU_WINDOW_SECONDS = 15.0
T = TypeVar("T")


def program_names(argv: Sequence[str]) -> list[str]:
    """The names a process runs as: its executable, or for `python [-m] X` the module or script X."""
    if not argv:
        return []
    names = [os.path.basename(argv[0])]
    if _PYTHON.match(names[0]):
        args = list(argv[1:])
        while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
            args = args[2:] if args[0] in _PYTHON_OPTIONS_WITH_VALUE else args[1:]
        if len(args) >= 2 and args[0] == "-m":
            names.append(args[1])
        elif args and args[0] != "-c":
            names.append(os.path.basename(args[0]))
    return names


@dataclass(frozen=True)
class EngineTree:
    pid: int
    engine_kind: str
    process: str
    command: str
    members: tuple[int, ...]  # the root and its descendants at the last scan
    target: str = ""  # the configured target(s) this tree serves (comma-separated), "" when none is known


class EngineMatcher:
    def __init__(self, extra: Sequence[EngineProcessPattern] = ()) -> None:
        # Each engine's file declares its program names (engines/registry.py collects them).
        self._builtin = [(kind, re.compile(rf"^{pattern}$")) for kind, pattern in PROCESS_NAMES.items()]
        self._extra = [(p.engine_kind, re.compile(p.pattern)) for p in extra]

    def kind(self, argv: Sequence[str]) -> str | None:
        """Configured patterns (searched in the whole command line) first, then the built-in program names."""
        line = " ".join(argv)
        for kind, pattern in self._extra:
            if pattern.search(line):
                return kind
        for name in program_names(argv):
            for kind, pattern in self._builtin:
                if pattern.match(name):
                    return kind
        return None


class HostCollector(Collector):
    name = "host"

    def __init__(
        self,
        engine_patterns: Sequence[EngineProcessPattern] = (),
        engine_process_limit: int = 16,
        scan_interval_seconds: float = SCAN_INTERVAL_SECONDS,
        start_threads: bool = True,
        process_labels: ProcessLabels | None = None,
        targets: Sequence[tuple[str, str]] = (),
        pacer: Pacer | None = None,
    ) -> None:
        self.matcher = EngineMatcher(engine_patterns)
        self._pacer = pacer  # None: a scan every interval; else before foreseen scrapes, at most that often
        # (name, port) of the configured targets on this host's loopback or own addresses: the engine tree
        # with a process listening on that port serves that target (`target` on host_engine_process_*)
        self._local_targets = [(name, port) for name, url in targets if (port := _local_port(url))]
        # namespace, pod, container of a process (Kubernetes attribution); None: no such labels
        self._process_labels = process_labels
        self.engine_process_limit = engine_process_limit
        self.scan_interval = scan_interval_seconds
        self._own_pid = os.getpid()
        self._cpu_lock = threading.Lock()
        # (monotonic time, all cores, per core) readings spanning the last CPU_WINDOW_SECONDS, oldest first
        self._cpu_readings: deque[tuple[float, Any, list[Any]]] = deque(
            [(time.monotonic(), psutil.cpu_times(), psutil.cpu_times(percpu=True))]
        )
        self._total_ratio: float | None = None
        self._core_ratios: dict[int, float] = {}
        self._engines: tuple[EngineTree, ...] = ()
        self._recognised: dict[tuple[int, float, str], tuple[str, str] | None] = {}
        self._errors: Counter[str] = Counter()
        self._scans = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start_threads:
            self._thread = threading.Thread(target=self._scan_loop, name="host-engine-scan", daemon=True)
            self._thread.start()

    # --- interface -------------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._scans > 0

    def error_counts(self) -> dict[str, int]:
        return dict(self._errors)

    def close(self) -> None:
        self._stop.set()
        if self._pacer is not None:
            self._pacer.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def engine_trees(self) -> tuple[EngineTree, ...]:
        return self._engines

    # --- engine discovery (background) ---------------------------------------------------------------

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.scan_engines()
            except Exception:
                self._errors["engine_scan"] += 1
                log.exception("engine process scan failed")
            if self._pacer is None:
                self._stop.wait(self.scan_interval)
            else:  # a scan reads every process's /proc/<pid>/stat: not while nobody scrapes
                lead = 1.0 + 2 * (time.monotonic() - started)
                self._pacer.wait(self._pacer.due(lead, started, min_spacing=self.scan_interval), self._stop)

    def scan_engines(self) -> None:
        children: dict[int, list[int]] = {}
        roots: list[tuple[int, int, str, str, str]] = []  # (pid, ppid, kind, name, command)
        seen: dict[tuple[int, float, str], tuple[str, str] | None] = {}
        # Only /proc/<pid>/stat is read for every process; the command line only for a process not seen
        # before under this (pid, start time, name): exec changes the name, so `exec vllm ...` is noticed.
        for process in psutil.process_iter(["pid", "ppid", "name", "create_time"]):
            info = process.info
            pid, ppid, name = info["pid"], info["ppid"] or 0, info["name"] or ""
            children.setdefault(ppid, []).append(pid)
            key = (pid, info["create_time"] or 0.0, name)
            if key not in self._recognised:
                self._recognised[key] = self._recognise(process) if pid != self._own_pid else None
            seen[key] = self._recognised[key]
            if seen[key] is not None:
                kind, command = seen[key]  # type: ignore[misc]
                roots.append((pid, ppid, kind, name, command))
        self._recognised = seen
        engine_pids = {r[0] for r in roots}
        parents = {pid: ppid for ppid, pids in children.items() for pid in pids}
        trees = []
        for pid, _ppid, kind, name, command in sorted(roots):
            if self._has_engine_ancestor(pid, parents, engine_pids):
                continue  # counted in its engine ancestor's tree
            trees.append(EngineTree(pid, kind, name, command, tuple(_descendants(pid, children))))
        self._engines = tuple(self._with_targets(trees[: self.engine_process_limit]))
        self._scans += 1

    def _with_targets(self, trees: list[EngineTree]) -> Iterator[EngineTree]:
        """Each tree with the targets whose port one of its processes listens on (own namespace only)."""
        listeners = (
            _listeners({port for _, port in self._local_targets}) if self._local_targets and trees else {}
        )
        for tree in trees:
            members = set(tree.members)
            names = sorted(name for name, port in self._local_targets if listeners.get(port, set()) & members)
            yield dataclasses.replace(tree, target=",".join(names)) if names else tree

    def _recognise(self, process: psutil.Process) -> tuple[str, str] | None:
        """(engine_kind, command label) when the process is an engine, else None."""
        try:
            argv = process.cmdline()
        except (psutil.Error, OSError):
            return None
        kind = self.matcher.kind(argv) if argv else None
        return None if kind is None else (kind, command_label(argv))

    @staticmethod
    def _has_engine_ancestor(pid: int, parents: dict[int, int], engine_pids: set[int]) -> bool:
        seen = set()
        parent = parents.get(pid, 0)
        while parent and parent not in seen:
            if parent in engine_pids:
                return True
            seen.add(parent)
            parent = parents.get(parent, 0)
        return False

    # --- collect ---------------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._cpu()
        yield from self._memory()
        yield from self._disks()
        yield from self._network()
        yield from self._engine_processes()

    def _read(self, kind: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except (psutil.Error, OSError, RuntimeError) as exc:
            self._errors[kind] += 1
            log.debug("host %s read failed: %s", kind, exc)
            return None

    def _cpu(self) -> Iterator[Metric]:
        total, per_core = (
            self._read("cpu", psutil.cpu_times),
            self._read("cpu", lambda: psutil.cpu_times(True)),
        )
        utilization = GaugeMetricFamily(
            "host_cpu_utilization_ratio",
            f"Busy fraction of all cores over the last {CPU_WINDOW_SECONDS:g} s.",
        )
        cores = GaugeMetricFamily(
            "host_cpu_core_utilization_ratio",
            f"Busy fraction per core over the last {CPU_WINDOW_SECONDS:g} s.",
            labels=["cpu"],
        )
        with self._cpu_lock:
            if total is not None and per_core is not None:
                self._update_cpu_ratios(total, per_core)
            # Passes closer together than the kernel's tick see no CPU time pass: they repeat the last value.
            if self._total_ratio is not None:
                utilization.add_metric([], self._total_ratio)
            for cpu, ratio in sorted(self._core_ratios.items()):
                cores.add_metric([str(cpu)], ratio)
        yield utilization
        yield cores
        yield GaugeMetricFamily("host_cpu_cores", "Logical cores.", value=psutil.cpu_count() or 0)
        load = self._read("load", psutil.getloadavg)
        if load is not None:
            family = GaugeMetricFamily("host_load_average", "Load average.", labels=["period"])
            for period, value in zip(("1m", "5m", "15m"), load, strict=True):
                family.add_metric([period], value)
            yield family

    def _update_cpu_ratios(self, total: Any, per_core: list[Any]) -> None:
        """Ratios between the newest reading and the oldest one within the window (a sliding window, so a
        gauge sampled every scrape interval averages that interval instead of the last refresher pass)."""
        now, readings = time.monotonic(), self._cpu_readings
        if len(per_core) != len(readings[-1][2]):  # a core went on- or offline: start the window again
            readings.clear()
        readings.append((now, total, per_core))
        while len(readings) > 2 and now - readings[1][0] >= CPU_WINDOW_SECONDS:
            readings.popleft()
        _, first_total, first_per_core = readings[0]
        if (ratio := _busy_ratio(first_total, total)) is not None:
            self._total_ratio = ratio
        if len(first_per_core) == len(per_core):
            for cpu, (before, after) in enumerate(zip(first_per_core, per_core, strict=True)):
                if (ratio := _busy_ratio(before, after)) is not None:
                    self._core_ratios[cpu] = ratio

    def _memory(self) -> Iterator[Metric]:
        memory = self._read("memory", psutil.virtual_memory)
        if memory is not None:
            yield GaugeMetricFamily("host_memory_total_bytes", "Physical memory.", value=memory.total)
            yield GaugeMetricFamily(
                "host_memory_available_bytes", "Memory available without swapping.", value=memory.available
            )
            yield GaugeMetricFamily(
                "host_memory_used_bytes", "Memory used (psutil's definition).", value=memory.used
            )
        swap = self._read("memory", psutil.swap_memory)
        if swap is not None:
            yield GaugeMetricFamily("host_swap_total_bytes", "Swap space.", value=swap.total)
            yield GaugeMetricFamily("host_swap_used_bytes", "Swap used.", value=swap.used)

    def _disks(self) -> Iterator[Metric]:
        disks = self._read("disk", lambda: psutil.disk_io_counters(perdisk=True)) or {}
        read = CounterMetricFamily(
            "host_disk_read_bytes_total", "Bytes read from the disk.", labels=["device"]
        )
        written = CounterMetricFamily(
            "host_disk_written_bytes_total", "Bytes written to the disk.", labels=["device"]
        )
        for device, counters in sorted(disks.items()):
            if not _DISK_EXCLUDE.match(device):
                read.add_metric([device], counters.read_bytes)
                written.add_metric([device], counters.write_bytes)
        yield read
        yield written

    def _network(self) -> Iterator[Metric]:
        nics = self._read("network", lambda: psutil.net_io_counters(pernic=True)) or {}
        families = {
            "bytes_recv": CounterMetricFamily(
                "host_network_receive_bytes_total", "Bytes received.", labels=["interface"]
            ),
            "bytes_sent": CounterMetricFamily(
                "host_network_transmit_bytes_total", "Bytes sent.", labels=["interface"]
            ),
            "errin": CounterMetricFamily(
                "host_network_receive_errors_total", "Receive errors.", labels=["interface"]
            ),
            "errout": CounterMetricFamily(
                "host_network_transmit_errors_total", "Transmit errors.", labels=["interface"]
            ),
        }
        for interface, counters in sorted(nics.items()):
            for field, family in families.items():
                family.add_metric([interface], getattr(counters, field))
        yield from families.values()

    def _engine_processes(self) -> Iterator[Metric]:
        pod = list(POD_LABELS) if self._process_labels is not None else []
        info = GaugeMetricFamily(
            "host_engine_process_info",
            "A recognised engine process (value 1).",
            labels=["pid", "engine_kind", "target", *pod, "process", "command"],
        )
        cpu = CounterMetricFamily(
            "host_engine_process_cpu_seconds_total",
            "CPU time of the engine's process tree.",
            labels=["pid", "engine_kind", "target", *pod, "mode"],
        )
        rss = GaugeMetricFamily(
            "host_engine_process_resident_memory_bytes",
            "RSS of the process tree.",
            labels=["pid", "engine_kind", "target", *pod],
        )
        threads = GaugeMetricFamily(
            "host_engine_process_threads",
            "Threads in the process tree.",
            labels=["pid", "engine_kind", "target", *pod],
        )
        for tree in self._engines:
            usage = self._tree_usage(tree)
            if usage is None:
                continue  # the engine exited since the last scan
            labels = [str(tree.pid), tree.engine_kind, tree.target, *self._pod_of(tree.pid)]
            info.add_metric([*labels, tree.process, tree.command], 1)
            cpu.add_metric([*labels, "user"], usage[0])
            cpu.add_metric([*labels, "system"], usage[1])
            rss.add_metric(labels, usage[2])
            threads.add_metric(labels, usage[3])
        yield from (info, cpu, rss, threads)

    def _pod_of(self, pid: int) -> list[str]:
        """namespace, pod, container of the engine's root process ("" where unknown); [] without them."""
        if self._process_labels is None:
            return []
        try:
            found = self._process_labels(pid, None)
        except Exception:  # attribution never costs the host series
            found = {}
        return [found.get(label, "") for label in POD_LABELS]

    def _tree_usage(self, tree: EngineTree) -> tuple[float, float, float, float] | None:
        user = system = rss = threads = 0.0
        root_alive = False
        for pid in tree.members:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info()
                    count = process.num_threads()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except (psutil.Error, OSError):
                self._errors["engine_process"] += 1
                continue
            root_alive |= pid == tree.pid
            user += times.user + times.children_user
            system += times.system + times.children_system
            rss += memory.rss
            threads += count
        return (user, system, rss, threads) if root_alive else None


def _local_port(url: str) -> int | None:
    """The port of a target on loopback or one of this host's names, else None (another namespace)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        local = host in ("localhost", socket.gethostname()) or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    return port if local else None


def _listeners(ports: set[int]) -> dict[int, set[int]]:
    """port -> pids listening on it in our network namespace (all we may see)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return {}
    found: dict[int, set[int]] = {}
    for c in connections:
        if c.pid is not None and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports:
            found.setdefault(c.laddr.port, set()).add(c.pid)
    return found


def _cpu_total(times: Any) -> float:
    # guest time is already part of user time on Linux (psutil's cpu_percent does the same)
    return sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _busy_ratio(before: Any, after: Any) -> float | None:
    """1 - idle share (idle and iowait) of the CPU time that passed between two cpu_times readings."""
    total = _cpu_total(after) - _cpu_total(before)
    if total <= 0:
        return None
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
    return min(1.0, max(0.0, 1.0 - idle / total))


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    result, stack = [], [pid]
    while stack and len(result) < 4096:
        current = stack.pop()
        result.append(current)
        stack.extend(children.get(current, []))
    return result
