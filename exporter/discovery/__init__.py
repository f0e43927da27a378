"""Engines and processes in Kubernetes: which engine pods run on this node, and which pod owns a process.

- kubernetes.py: `PodWatcher`, a list + watch of this node's pods (the API's protocol: resourceVersion,
  bookmarks, 410 Gone -> list again, backoff); `engine_targets()` are the pods that opt in (pods.py).
- podresources.py: `Allocations`, the kubelet's pod-resources List (which GPUs each container holds).
- cgroup.py: a process's pod UID and container ID from /proc/<pid>/cgroup.
- attribution.py: `PodAttribution.labels(pid, gpu_uuid)`: namespace/pod/container for a process.
Nothing here imports a collector; the collectors are handed these objects.
"""
