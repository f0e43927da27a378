"""Which Kubernetes pod and container a process runs in, from its cgroup path (/proc/<pid>/cgroup).

The kubelet puts every container in a cgroup whose path names the pod's UID and the container's runtime
ID. The path differs by cgroup driver, runtime and cgroup version, but these two parts are always there:

    cgroup v2, systemd driver, containerd:  0::/kubepods.slice/kubepods-burstable.slice/
        kubepods-burstable-pod<uid with _>.slice/cri-containerd-<64 hex>.scope
    cgroup v1, cgroupfs driver:             4:memory:/kubepods/burstable/pod<uid>/<64 hex>
    CRI-O, Docker (cri-dockerd):            .../crio-<64 hex>.scope, .../docker-<64 hex>.scope

Read from inside a container with its own cgroup namespace the path is relative (`0::/../../kubepods...`);
the parts are still there. Static pods have a 32-hex config hash for a UID, which the API shows in the
mirror pod's `kubernetes.io/config.mirror` annotation. A process outside any pod, a file that cannot be
read (the process ended, no permission) or an unknown layout gives None: no pod labels, never a wrong one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_CGROUP_BYTES = 64 * 1024
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{12})(?:\.slice)?(?:/|$)"
)
# The last path component: `<64 hex>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`.
# CRI-O's `crio-conmon-<id>.scope` is its monitor process, not the container.
_CONTAINER_ID = re.compile(r"(?:^|/)(?:(?:cri-containerd|crio|docker)-)?([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True)
class ContainerRef:
    """A pod UID (lower case, without separators) and a container's runtime ID (64 hex, no prefix)."""

    pod_uid: str
    container_id: str | None


def pod_uid_key(uid: str) -> str:
    """A UID as the cgroup path and the API both can be compared in: lower case, no dashes."""
    return uid.replace("-", "").replace("_", "").lower()


def parse_cgroup(text: str) -> ContainerRef | None:
    """The pod and container of the first line of a /proc/<pid>/cgroup text that names a pod."""
    lines = text.splitlines()
    # cgroup v2's unified line (`0::`) first; on v1 every controller repeats the same pod path.
    for line in sorted(lines, key=lambda line: not line.startswith("0::")):
        path = line.split(":", 2)[-1].rstrip("/")
        pod = _POD_UID.search(path)
        if pod is None:
            continue
        container = _CONTAINER_ID.search(path[pod.end() :])
        return ContainerRef(pod_uid_key(pod.group(1)), container.group(1) if container else None)
    return None


def container_of(pid: int, proc: Path = Path("/proc")) -> ContainerRef | None:
    try:
        with open(proc / str(pid) / "cgroup", "rb") as file:
            data = file.read(MAX_CGROUP_BYTES)
    except OSError:
        return None
    return parse_cgroup(data.decode("utf-8", "replace"))


__all__ = ["ContainerRef", "container_of", "parse_cgroup", "pod_uid_key"]
