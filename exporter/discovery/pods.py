"""Pods as the exporter needs them, and which of them are engines to scrape.

Only what discovery and attribution use is kept of each Pod object (its identity, its containers' names,
ports and runtime IDs, and the llmobs.io/* opt-in), so memory stays small whatever the objects carry.

A pod opts in with the label or annotation `llmobs.io/engine` (an engine kind, or `auto` to discover it);
the other keys are annotations:

| key | value | default |
| --- | --- | --- |
| `llmobs.io/engine` | `vllm`, `sglang`, ... (engines/registry.py) or `auto` | none: not scraped |
| `llmobs.io/port` | the port: a number or a container port's name | the pod's only declared container port |
| `llmobs.io/path` | a target URL's path: `/metrics` (exact) or a base path (a proxy prefix) | none |
| `llmobs.io/scheme` | `http` or `https` | `http` |
| `llmobs.io/model` | the `model` label for engines whose metrics name none (llama.cpp, TGI) | none |
| `llmobs.io/container` | the engine's container, where no container declares the port | the declaring one |

A pod is scraped while it runs (phase Running, an IP, not being deleted). A pod that opts in with values
that cannot work (unknown kind, no port, a port no container declares by that name) is not scraped, and
`engine_target` says why (the watcher logs it once per pod).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.discovery.cgroup import pod_uid_key
from exporter.engines.registry import ENGINE_KINDS

PREFIX = "llmobs.io/"
ENGINE_KEY = PREFIX + "engine"
AUTO = "auto"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # a static pod's config hash: its UID in cgroup paths
_RUNTIME_ID = re.compile(r"^[a-z0-9-]+://([0-9a-f]{64})$")  # containerd://<id>, cri-o://<id>, docker://<id>
_PATH = re.compile(r"^/[A-Za-z0-9._~/%-]{0,200}$")
MAX_TARGET_NAME = 253 + 1 + 63  # namespace/pod at the lengths Kubernetes allows
MAX_LABEL_CHARS = 256  # llmobs.io/model and llmobs.io/container: label values (an annotation may be 256 KiB)


@dataclass(frozen=True)
class Container:
    name: str
    ports: tuple[tuple[str, int], ...]  # (port name or "", number), TCP only


@dataclass(frozen=True)
class Pod:
    uid: str
    namespace: str
    name: str
    node: str
    phase: str
    ip: str
    deleting: bool
    containers: tuple[Container, ...]
    runtime_ids: Mapping[str, str]  # container runtime ID (64 hex) -> container name
    opt_in: Mapping[str, str]  # llmobs.io/* annotations, the engine label folded in
    mirror_uid: str = ""

    @property
    def uid_keys(self) -> tuple[str, ...]:
        """The keys a cgroup path may name this pod by."""
        return tuple(pod_uid_key(u) for u in (self.uid, self.mirror_uid) if u)

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.ip) and not self.deleting


@dataclass(frozen=True)
class EngineTarget:
    """An engine pod to scrape: a target named <namespace>/<pod>, with the labels its series get."""

    name: str
    url: str
    kind: str | None  # None: discover it
    model: str | None
    namespace: str
    pod: str
    container: str

    def labels(self) -> dict[str, str]:
        labels = {"namespace": self.namespace, "pod": self.pod}
        if self.container:
            labels["container"] = self.container
        return labels


def pod_from_api(obj: Mapping[str, Any]) -> Pod:
    """A Pod from the API's JSON (core/v1 Pod); missing fields read as empty."""
    meta, spec, status = (_mapping(obj.get(key)) for key in ("metadata", "spec", "status"))
    annotations = _strings(meta.get("annotations"))
    labels = _strings(meta.get("labels"))
    opt_in = {k: v for k, v in annotations.items() if k.startswith(PREFIX)}
    if ENGINE_KEY in labels and ENGINE_KEY not in opt_in:
        opt_in[ENGINE_KEY] = labels[ENGINE_KEY]
    containers = tuple(_container(c) for c in _list(spec.get("containers")) if isinstance(c, Mapping))
    runtime_ids: dict[str, str] = {}
    statuses = [*_list(status.get("containerStatuses")), *_list(status.get("initContainerStatuses"))]
    for state in statuses:
        if not isinstance(state, Mapping):
            continue
        match = _RUNTIME_ID.match(str(state.get("containerID") or ""))
        if match and state.get("name"):
            runtime_ids[match.group(1)] = str(state["name"])
    return Pod(
        uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or ""),
        ip=str(status.get("podIP") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        containers=containers,
        runtime_ids=runtime_ids,
        opt_in=opt_in,
        mirror_uid=annotations.get(MIRROR_ANNOTATION, ""),
    )


def engine_target(pod: Pod) -> EngineTarget | str | None:
    """The target an opted-in running pod is scraped as; a reason (str) when its opt-in cannot work;
    None when it did not opt in or does not run."""
    kind = pod.opt_in.get(ENGINE_KEY)
    if kind is None or not pod.running:
        return None
    if kind != AUTO and kind not in ENGINE_KINDS:
        return f"{ENGINE_KEY}={kind!r} is not {AUTO} or one of {', '.join(ENGINE_KINDS)}"
    found = _port(pod)
    if isinstance(found, str):
        return found
    port, container = found
    scheme = pod.opt_in.get(PREFIX + "scheme", "http")
    if scheme not in ("http", "https"):
        return f"{PREFIX}scheme={scheme!r} is not http or https"
    path = pod.opt_in.get(PREFIX + "path", "")
    if path and not _PATH.match(path):
        return f"{PREFIX}path={path!r} is not an absolute URL path"
    for key in ("model", "container"):
        value = pod.opt_in.get(PREFIX + key, "")
        if len(value) > MAX_LABEL_CHARS:  # it becomes a label value on every series of the target
            return f"{PREFIX}{key} is longer than {MAX_LABEL_CHARS} characters"
    try:
        ipaddress.ip_address(pod.ip)
    except ValueError:  # it goes into the target's URL: "10.0.0.1@elsewhere" would name another host
        return f"status.podIP={pod.ip[:64]!r} is not an IP address"
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    return EngineTarget(
        name=f"{pod.namespace}/{pod.name}"[:MAX_TARGET_NAME],
        url=f"{scheme}://{host}:{port}{path}",
        kind=None if kind == AUTO else kind,
        model=pod.opt_in.get(PREFIX + "model") or None,
        namespace=pod.namespace,
        pod=pod.name,
        container=pod.opt_in.get(PREFIX + "container") or container,
    )


def _port(pod: Pod) -> tuple[int, str] | str:
    """(port, container declaring it or "") from llmobs.io/port, or the pod's only declared port."""
    declared = [(name, number, c.name) for c in pod.containers for name, number in c.ports]
    wanted = pod.opt_in.get(PREFIX + "port", "").strip()
    if not wanted:
        if len(declared) == 1:
            return declared[0][1], declared[0][2]
        return f"no {PREFIX}port annotation and {len(declared)} declared container ports (need exactly one)"
    if wanted.isdigit():
        number = int(wanted)
        if not 0 < number < 65536:
            return f"{PREFIX}port={wanted!r} is not a port number"
        owners = {c for _, n, c in declared if n == number}
        return number, owners.pop() if len(owners) == 1 else ""
    named = [(n, c) for name, n, c in declared if name == wanted]
    if len(named) != 1:
        return f"{PREFIX}port={wanted!r}: {len(named)} container ports have that name (need exactly one)"
    return named[0]


def _container(raw: Mapping[str, Any]) -> Container:
    ports = []
    for port in _list(raw.get("ports")):
        if not isinstance(port, Mapping) or port.get("protocol", "TCP") != "TCP":
            continue
        number = port.get("containerPort")
        if isinstance(number, int) and 0 < number < 65536:
            ports.append((str(port.get("name") or ""), number))
    return Container(name=str(raw.get("name") or ""), ports=tuple(ports))


def _list(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else []


def _mapping(raw: Any) -> Mapping[str, Any]:
    return raw if isinstance(raw, Mapping) else {}


def _strings(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


__all__ = ["AUTO", "ENGINE_KEY", "Container", "EngineTarget", "Pod", "engine_target", "pod_from_api"]
