"""KubernetesCollector: the exporter's `kubernetes` collector, which owns the pod watch and the kubelet's
pod-resources poller and hands the other collectors what they need from them:

- `engine_targets()`: the opted-in engine pods of this node as (TargetConfig, labels) pairs, for the engines
  collector (targets named `<namespace>/<pod>`, labels `namespace`, `pod`, `container`);
- `process_labels(pid, gpu_uuid)`: `namespace`, `pod`, `container` of a process, for the GPU and host
  collectors (attribution.py; cached for a few seconds per process).
Its own families: `exporter_kubernetes_watch_synced` (1 once this node's pods have been listed),
`exporter_kubernetes_pods` (pods of this node it knows), `exporter_kubernetes_engine_pods` (of those, the
ones scraped as engines), `exporter_kubernetes_relists_total` (410 Gone); its failures go to
`exporter_collector_errors_total{collector="kubernetes"}` by kind (`pod_resources_<status>` for the kubelet).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config import Config, ConfigError, TargetConfig
from exporter.discovery.attribution import PodAttribution
from exporter.discovery.kubernetes import ApiSettings, PodWatcher, WatchFailure
from exporter.discovery.podresources import Allocations, PodResourcesClient
from exporter.discovery.pods import Pod

LABEL_CACHE_SECONDS = 5.0
MAX_CACHED_PROCESSES = 4096
FIRST_LIST_WAIT_SECONDS = 5.0


class KubernetesCollector:
    name = "kubernetes"

    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str] | None = None,
        start_threads: bool = True,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._watcher: PodWatcher | None = None
        if config.kubernetes_discovery:
            assert config.kubernetes_node_name  # load_config refuses discovery without it
            url = config.kubernetes_api_url
            try:
                settings = ApiSettings(url) if url else ApiSettings.in_cluster(environ)
            except WatchFailure as exc:
                raise ConfigError(
                    f"--kubernetes.discovery: {exc}; outside a pod, set --kubernetes.api-url"
                ) from None
            self._watcher = PodWatcher(settings, config.kubernetes_node_name)
        self._allocations: Allocations | None = None
        if config.kubernetes_pod_resources_socket is not None:
            client = PodResourcesClient(str(config.kubernetes_pod_resources_socket))
            self._allocations = Allocations(client)
        self._attribution = PodAttribution(
            self.pods, self._allocations.gpu_containers if self._allocations else dict
        )
        self._labels_lock = threading.Lock()
        self._labels: dict[tuple[int, str | None], tuple[float, dict[str, str]]] = {}
        self._started = time.monotonic()
        if start_threads:
            self.start()

    def start(self) -> KubernetesCollector:
        if self._watcher is not None:
            self._watcher.start()
        if self._allocations is not None:
            self._allocations.start()
        return self

    # -- for the other collectors ---------------------------------------------------------------------

    def pods(self) -> Mapping[str, Pod]:
        return self._watcher.pods() if self._watcher is not None else {}

    def engine_targets(self) -> list[tuple[TargetConfig, dict[str, str]]]:
        if self._watcher is None:
            return []
        return [
            (TargetConfig(name=t.name, url=t.url, kind=t.kind, model=t.model), t.labels())
            for t in self._watcher.engine_targets()
        ]

    def process_labels(self, pid: int, gpu_uuid: str | None = None) -> dict[str, str]:
        key, now = (pid, gpu_uuid), time.monotonic()
        with self._labels_lock:
            cached = self._labels.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        labels = self._attribution.labels(pid, gpu_uuid)
        with self._labels_lock:
            if len(self._labels) >= MAX_CACHED_PROCESSES:
                self._labels.clear()
            self._labels[key] = (now + LABEL_CACHE_SECONDS, labels)
        return labels

    # -- registry.ExporterCollector ---------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        watcher = self._watcher
        if watcher is None:
            return
        pods = watcher.pods()
        yield GaugeMetricFamily(
            "exporter_kubernetes_watch_synced",
            "1 once this node's pods have been listed from the Kubernetes API.",
            value=float(watcher.synced()),
        )
        yield GaugeMetricFamily("exporter_kubernetes_pods", "Pods of this node known.", value=len(pods))
        yield GaugeMetricFamily(
            "exporter_kubernetes_engine_pods",
            "Pods of this node scraped as engines (llmobs.io/engine).",
            value=len(watcher.engine_targets()),
        )
        yield CounterMetricFamily(
            "exporter_kubernetes_relists",
            "Lists of this node's pods forced by 410 Gone (an expired resourceVersion).",
            value=watcher.relists,
        )

    def ready(self) -> bool:
        """Ready once this node's pods are listed, or after a few seconds without the API (GPU and host
        metrics do not wait for Kubernetes)."""
        if self._watcher is None or self._watcher.synced():
            return True
        return time.monotonic() - self._started > FIRST_LIST_WAIT_SECONDS

    def error_counts(self) -> dict[str, int]:
        counts = self._watcher.error_counts() if self._watcher is not None else {}
        if self._allocations is not None:
            counts.update({f"pod_resources_{k}": n for k, n in self._allocations.error_counts().items()})
        return counts

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        if self._allocations is not None:
            self._allocations.close()


__all__ = ["KubernetesCollector"]
