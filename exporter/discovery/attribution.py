"""Which pod and container a process belongs to: `namespace`, `pod`, `container` labels for its series.

For a GPU process (NVML gives its host PID and its GPU's UUID), the kubelet's pod-resources answer comes
first: the container the device plugin allocated that GPU (or MIG instance) to, when exactly one was.
Otherwise (a time-sliced GPU shared by several containers, a GPU given to a pod outside the device plugin,
no pod-resources socket) and for any other process (engine processes), the process's cgroup path names
its pod UID and container runtime ID, which the pod watch turns into names. Nothing found: no labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from exporter.discovery.cgroup import ContainerRef, container_of
from exporter.discovery.podresources import ContainerKey
from exporter.discovery.pods import Pod

LABELS = ("namespace", "pod", "container")


class PodAttribution:
    def __init__(
        self,
        pods: Callable[[], Mapping[str, Pod]],
        gpu_containers: Callable[[], Mapping[str, tuple[ContainerKey, ...]]] = dict,
        cgroup_of: Callable[[int], ContainerRef | None] = container_of,
    ) -> None:
        self._pods, self._gpu_containers, self._cgroup_of = pods, gpu_containers, cgroup_of
        self._snapshot: Mapping[str, Pod] | None = None
        self._by_uid: dict[str, Pod] = {}

    def labels(self, pid: int, gpu_uuid: str | None = None) -> dict[str, str]:
        """{namespace, pod[, container]} of the process, or {} when it is in no known pod."""
        if gpu_uuid:
            allocated = self._gpu_containers().get(gpu_uuid, ())
            if len(allocated) == 1:
                key = allocated[0]
                return {"namespace": key.namespace, "pod": key.pod, "container": key.container}
        ref = self._cgroup_of(pid)
        if ref is None:
            return {}
        pod = self._index().get(ref.pod_uid)
        if pod is None:
            return {}
        labels = {"namespace": pod.namespace, "pod": pod.name}
        container = pod.runtime_ids.get(ref.container_id or "")
        if container:
            labels["container"] = container
        return labels

    def _index(self) -> dict[str, Pod]:
        pods = self._pods()
        if pods is not self._snapshot:  # the watcher replaces its snapshot whole on every change
            self._by_uid = {key: pod for pod in pods.values() for key in pod.uid_keys}
            self._snapshot = pods
        return self._by_uid


__all__ = ["LABELS", "PodAttribution"]
