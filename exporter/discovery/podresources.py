"""Which GPUs the kubelet allocated to which container: its pod-resources API (`podresources/v1` List).

The kubelet serves gRPC on a unix socket (/var/lib/kubelet/pod-resources/kubelet.sock) that lists, per
pod and container, the device IDs each device plugin allocated; NVIDIA's device plugin allocates GPUs
(`nvidia.com/gpu`) and MIG instances (`nvidia.com/mig-*`) by UUID. dcgm-exporter reads the same socket.
Time-sliced GPUs appear as `GPU-<uuid>::<replica>`: the replica suffix is dropped, so a GPU shared by
several containers maps to all of them (the caller then decides by cgroup). Devices allocated through
dynamic resource allocation (DRA) carry no UUID here and are not mapped.

`Allocations` polls List on a thread of its own (every 10 s, 2 s deadline, answers up to 16 MiB), so a
slow or absent kubelet never holds up a scrape; `gpu_containers()` is the last good answer, and failures
are counted by gRPC status (`unavailable`, `deadline_exceeded`, ...) or as `too_many_devices` (an answer
naming more than 4,096 GPU devices, which no node has). The stubs in podresources_v1/ are
generated from Kubernetes' published api.proto (see its README).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

log = logging.getLogger("exporter.kubernetes")
DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
GPU_RESOURCE_PREFIX = "nvidia.com/"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_GPU_DEVICES = 4096  # GPU and MIG UUIDs in one answer (8 GPUs x 7 MIG slices is 56)
POLL_SECONDS = 10.0
DEADLINE_SECONDS = 2.0


@dataclass(frozen=True, order=True)
class ContainerKey:
    namespace: str
    pod: str
    container: str


class TooManyDevices(ValueError):
    """An answer naming more GPU devices than any node has: not believed (the last good map stays)."""


def gpu_device_map(response: object) -> dict[str, tuple[ContainerKey, ...]]:
    """GPU or MIG UUID -> the containers allocated it, from a ListPodResourcesResponse."""
    found: dict[str, set[ContainerKey]] = {}
    for pod in response.pod_resources:  # type: ignore[attr-defined]
        for container in pod.containers:
            key = ContainerKey(pod.namespace, pod.name, container.name)
            for devices in container.devices:
                if not devices.resource_name.startswith(GPU_RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    uuid = device_id.split("::", 1)[0]
                    found.setdefault(uuid, set()).add(key)
                    if len(found) > MAX_GPU_DEVICES:
                        raise TooManyDevices(f"more than {MAX_GPU_DEVICES} GPU devices in one answer")
    return {uuid: tuple(sorted(keys)) for uuid, keys in found.items()}


class PodResourcesClient:
    """One gRPC channel to the kubelet's socket; `list()` raises grpc.RpcError on failure."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, deadline_seconds: float = DEADLINE_SECONDS) -> None:
        import grpc

        from exporter.discovery.podresources_v1 import api_pb2, api_pb2_grpc

        self._request = api_pb2.ListPodResourcesRequest()
        self._deadline = deadline_seconds
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)

    def list(self) -> dict[str, tuple[ContainerKey, ...]]:
        return gpu_device_map(self._stub.List(self._request, timeout=self._deadline))

    def close(self) -> None:
        self._channel.close()


class Allocations:
    """The GPU allocations of this node's containers, renewed in the background."""

    def __init__(self, client: PodResourcesClient, poll_seconds: float = POLL_SECONDS) -> None:
        self._client, self._poll = client, poll_seconds
        self._map: Mapping[str, tuple[ContainerKey, ...]] = MappingProxyType({})
        self._errors: Counter[str] = Counter()
        self._failing = False
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-resources", daemon=True)

    def start(self) -> Allocations:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._client.close()

    def gpu_containers(self) -> Mapping[str, tuple[ContainerKey, ...]]:
        return self._map

    def error_counts(self) -> dict[str, int]:
        return dict(self._errors)

    def wait_first(self, timeout: float) -> bool:
        """True once the first poll has finished (answered or failed)."""
        return self._first.wait(timeout)

    def refresh(self) -> None:
        import grpc

        try:
            self._map = MappingProxyType(self._client.list())
        except (grpc.RpcError, TooManyDevices) as exc:
            code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
            kind = code.name.lower() if code is not None else "rpc"
            kind = "too_many_devices" if isinstance(exc, TooManyDevices) else kind
            self._errors[kind] += 1
            if not self._failing:
                log.warning("kubelet pod-resources List failed: %s; attribution falls back to cgroups", kind)
            self._failing = True
            return
        if self._failing:
            log.info("kubelet pod-resources List answers again")
        self._failing = False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # nothing may end this thread
                self._errors["exception"] += 1
                log.exception("kubelet pod-resources: unexpected failure")
            self._first.set()
            self._stop.wait(self._poll)


__all__ = ["Allocations", "ContainerKey", "PodResourcesClient", "TooManyDevices", "gpu_device_map"]
