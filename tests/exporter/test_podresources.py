"""GPU allocations from the kubelet's pod-resources API: the client against a real gRPC server built from
Kubernetes' published podresources/v1 api.proto, over a unix socket (the kubelet's own transport); the
generated stubs checked against the proto; cgroup paths; and the attribution that combines them."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from exporter.discovery.attribution import PodAttribution
from exporter.discovery.cgroup import ContainerRef, container_of, parse_cgroup
from exporter.discovery.podresources import Allocations, ContainerKey, PodResourcesClient, gpu_device_map
from exporter.discovery.podresources_v1 import api_pb2, api_pb2_grpc
from exporter.discovery.pods import pod_from_api
from tests.exporter.test_kubernetes_discovery import vllm_pod

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "exporter" / "discovery" / "podresources_v1"
GPU_A, GPU_B, GPU_C = (
    "GPU-0b5e6a39-1d2f-4c8e-9a7b-3c4d5e6f7a8b",
    "GPU-7d2c1b0a-9e8f-4d6c-b5a4-3f2e1d0c9b8a",
    "GPU-c",
)
MIG = "MIG-4f1c2d3e-5a6b-5c7d-8e9f-0a1b2c3d4e5f"
GPU = "nvidia.com/gpu"


def container(name: str, *devices: tuple[str, list[str]]) -> api_pb2.ContainerResources:
    return api_pb2.ContainerResources(
        name=name,
        devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devices],
        cpu_ids=[2, 3],
    )


def node_response() -> api_pb2.ListPodResourcesResponse:
    """A node as the kubelet would describe it: GPUs by UUID, a MIG instance, a time-sliced GPU shared by
    two pods (`::<replica>`), a non-GPU device, a DRA claim (no UUID), and a pod without devices."""
    dra = api_pb2.DynamicResource(
        claim_name="gpu-claim",
        claim_namespace="research",
        claim_resources=[
            api_pb2.ClaimResource(driver_name="gpu.nvidia.com", pool_name="n1", device_name="gpu-3")
        ],
    )
    return api_pb2.ListPodResourcesResponse(
        pod_resources=[
            api_pb2.PodResources(
                name="vllm-0", namespace="serving",
                containers=[container("vllm", ("nvidia.com/gpu", [GPU_A, GPU_B])), container("sidecar")],
            ),
            api_pb2.PodResources(
                name="small", namespace="serving", containers=[container("llama", ("nvidia.com/mig", [MIG]))]
            ),
            api_pb2.PodResources(
                name="shared-1", namespace="dev",
                containers=[container("a", (GPU, [f"{GPU_C}::0"]), ("example.com/nic", ["nic0"]))],
            ),
            api_pb2.PodResources(
                name="shared-2", namespace="dev", containers=[container("b", (GPU, [f"{GPU_C}::1"]))]
            ),
            api_pb2.PodResources(
                name="trainer", namespace="research",
                containers=[api_pb2.ContainerResources(name="main", dynamic_resources=[dra])],
            ),
            api_pb2.PodResources(name="web", namespace="default", containers=[container("nginx")]),
        ]
    )  # fmt: skip


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self) -> None:
        self.response = node_response()
        self.calls = 0
        self.delay = 0.0

    def List(self, request, context):  # the proto's method name
        self.calls += 1
        time.sleep(self.delay)
        return self.response


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[Kubelet, str]]:
    servicer = Kubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    socket = str(tmp_path / "kubelet.sock")
    assert server.add_insecure_port(f"unix://{socket}") == 1
    server.start()
    yield servicer, socket
    server.stop(grace=None)


def test_list_over_the_kubelets_unix_socket(kubelet: tuple[Kubelet, str]) -> None:
    servicer, socket = kubelet
    client = PodResourcesClient(socket)
    try:
        allocations = client.list()
    finally:
        client.close()
    assert allocations == {
        GPU_A: (ContainerKey("serving", "vllm-0", "vllm"),),
        GPU_B: (ContainerKey("serving", "vllm-0", "vllm"),),
        MIG: (ContainerKey("serving", "small", "llama"),),
        GPU_C: (ContainerKey("dev", "shared-1", "a"), ContainerKey("dev", "shared-2", "b")),
    }
    assert servicer.calls == 1


def test_failures_are_counted_by_status_and_the_last_answer_kept(kubelet: tuple[Kubelet, str]) -> None:
    servicer, socket = kubelet
    allocations = Allocations(PodResourcesClient(socket, deadline_seconds=0.3), poll_seconds=3600)
    try:
        allocations.refresh()
        assert GPU_A in allocations.gpu_containers()
        servicer.delay = 1.0
        allocations.refresh()
        assert allocations.error_counts() == {"deadline_exceeded": 1}
        assert GPU_A in allocations.gpu_containers()  # the last good answer stays
    finally:
        allocations.close()


def test_no_socket_is_unavailable_and_never_blocks(tmp_path: Path) -> None:
    allocations = Allocations(PodResourcesClient(str(tmp_path / "absent.sock"), deadline_seconds=0.5)).start()
    try:
        assert allocations.wait_first(5)
        assert allocations.gpu_containers() == {}
        assert set(allocations.error_counts()) <= {"unavailable", "deadline_exceeded"}
        assert sum(allocations.error_counts().values()) == 1
    finally:
        allocations.close()


def test_device_map_from_a_decoded_message() -> None:
    wire = node_response().SerializeToString()
    decoded = api_pb2.ListPodResourcesResponse.FromString(wire)
    assert gpu_device_map(decoded) == gpu_device_map(node_response())


def test_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    work = tmp_path / "exporter" / "discovery" / "podresources_v1"
    work.mkdir(parents=True)
    shutil.copy(STUBS / "api.proto", work / "api.proto")
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=.",
               "--grpc_python_out=.", "exporter/discovery/podresources_v1/api.proto"]  # fmt: skip
    subprocess.run(command, cwd=tmp_path, check=True)
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        assert filecmp.cmp(work / name, STUBS / name, shallow=False), f"{name} is stale (README.md there)"


# -- cgroup paths -------------------------------------------------------------------------------------------

CID = "8e3f1a9c2b7d4e6f0a5c8b1d3e7f9a2c4b6d8e0f1a3c5b7d9e2f4a6c8b0d1e3f"
UID = "5c1e2f9a3b7d4e8a9f210d6c4b8a7e13"
SLICE = "pod5c1e2f9a_3b7d_4e8a_9f21_0d6c4b8a7e13.slice"  # systemd driver
FOLDER = "pod5c1e2f9a-3b7d-4e8a-9f21-0d6c4b8a7e13"  # cgroupfs driver
STATIC = "abcdef0123456789abcdef0123456789"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        # cgroup v2, systemd driver, containerd
        (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{SLICE}/cri-containerd-{CID}.scope\n",
         (UID, CID)),
        # cgroup v2 read from a container with a cgroup namespace of its own; CRI-O
        (f"0::/../../kubepods-besteffort-{SLICE}/crio-{CID}.scope\n", (UID, CID)),
        # cgroup v1, cgroupfs driver, Guaranteed QoS (no class folder)
        (f"12:pids:/kubepods/{FOLDER}/{CID}\n11:memory:/kubepods/{FOLDER}/{CID}\n", (UID, CID)),
        (f"0::/kubepods.slice/kubepods-{SLICE}/docker-{CID}.scope", (UID, CID)),
        # a static pod: its UID is the config hash
        (f"0::/kubepods/burstable/pod{STATIC}/{CID}", (STATIC, CID)),
        # CRI-O's monitor process is in the pod but in no container
        (f"0::/kubepods.slice/kubepods-{SLICE}/crio-conmon-{CID}.scope", (UID, None)),
        ("0::/system.slice/containerd.service\n", None),
        ("0::/user.slice/user-1000.slice/session-4.scope\n", None),
        ("", None),
        ("garbage without colons", None),
    ],
)  # fmt: skip
def test_cgroup_paths(text: str, expect: tuple[str, str | None] | None) -> None:
    assert parse_cgroup(text) == (ContainerRef(*expect) if expect else None)


def test_cgroup_of_a_real_process_and_of_none() -> None:
    container_of(1)  # whatever this machine is, reading its own /proc works or returns None
    assert container_of(2**22 + 12345) is None  # no such pid


def test_cgroup_file_is_read_within_its_budget(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("0::/" + "a/" * 100_000)
    assert container_of(7, proc=tmp_path) is None


# -- attribution --------------------------------------------------------------------------------------------


def test_gpu_processes_by_allocation_then_by_cgroup() -> None:
    pod = pod_from_api(vllm_pod())
    cgroups = {100: ContainerRef(UID, CID), 101: ContainerRef(UID, None), 102: ContainerRef("f" * 32, CID)}
    attribution = PodAttribution(
        pods=lambda: {pod.uid: pod},
        gpu_containers=lambda: gpu_device_map(node_response()),
        cgroup_of=cgroups.get,
    )
    # allocated to exactly one container: that one, whatever the process's cgroup says
    assert attribution.labels(555, GPU_A) == {"namespace": "serving", "pod": "vllm-0", "container": "vllm"}
    # a time-sliced GPU shared by two containers: the process's cgroup decides
    expected = {"namespace": "serving", "pod": "vllm-qwen3-6d9f7c5b8-x2x7q", "container": "vllm"}
    assert attribution.labels(100, GPU_C) == expected
    assert attribution.labels(100) == expected  # an engine process, no GPU
    assert attribution.labels(101) == {"namespace": "serving", "pod": "vllm-qwen3-6d9f7c5b8-x2x7q"}
    assert attribution.labels(102) == {}  # a pod this node's watch does not know
    assert attribution.labels(103, "GPU-unknown") == {}  # outside any pod


def test_static_pods_match_by_their_mirror_annotation() -> None:
    raw = vllm_pod()
    raw["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "abcdef0123456789abcdef0123456789"
    pod = pod_from_api(raw)
    attribution = PodAttribution(
        pods=lambda: {pod.uid: pod},
        cgroup_of=lambda pid: ContainerRef("abcdef0123456789abcdef0123456789", CID),
    )
    assert attribution.labels(1)["container"] == "vllm"


def test_an_answer_with_more_gpus_than_a_node_has_is_not_believed(kubelet: tuple[Kubelet, str]) -> None:
    """800,000 device IDs in 11 MB (under the 16 MiB budget) took the exporter past 500 MB."""
    servicer, socket = kubelet
    allocations = Allocations(PodResourcesClient(socket), poll_seconds=3600)
    try:
        allocations.refresh()
        assert GPU_A in allocations.gpu_containers()
        ids = [f"GPU-{i}" for i in range(5000)]
        pod = api_pb2.PodResources(name="p", namespace="n", containers=[container("c", (GPU, ids))])
        servicer.response = api_pb2.ListPodResourcesResponse(pod_resources=[pod])
        allocations.refresh()
        assert allocations.error_counts() == {"too_many_devices": 1}
        assert GPU_A in allocations.gpu_containers() and "GPU-0" not in allocations.gpu_containers()
    finally:
        allocations.close()
