"""Engine pods on this node: the Pod model and opt-in (exporter/discovery/pods.py) and the list + watch
(exporter/discovery/kubernetes.py) against a fake API server that answers the published list and watch
shapes (tests/exporter/fake_kube_api.py; no API server can run here)."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.discovery import kubernetes as kube
from exporter.discovery.kubernetes import ApiSettings, PodWatcher
from exporter.discovery.pods import EngineTarget, engine_target, pod_from_api
from tests.exporter.fake_kube_api import FakeKubeApi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kubernetes"
NODE = "gpu-node-1"


def vllm_pod() -> dict:
    return json.loads((FIXTURES / "pod-vllm.json").read_text())


def make_pod(name: str, uid: str, node: str = NODE, **annotations: str) -> dict:
    pod = vllm_pod()
    pod["metadata"].update(name=name, uid=uid)
    pod["metadata"]["annotations"] = {**pod["metadata"]["annotations"], **annotations}
    pod["spec"]["nodeName"] = node
    return pod


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- the Pod model and the opt-in ---------------------------------------------------------------------------


def test_recorded_pod_becomes_an_engine_target() -> None:
    pod = pod_from_api(vllm_pod())
    assert (pod.namespace, pod.name, pod.node, pod.ip, pod.running) == (
        "serving", "vllm-qwen3-6d9f7c5b8-x2x7q", NODE, "10.244.1.23", True
    )  # fmt: skip
    assert pod.runtime_ids["8e3f1a9c2b7d4e6f0a5c8b1d3e7f9a2c4b6d8e0f1a3c5b7d9e2f4a6c8b0d1e3f"] == "vllm"
    assert engine_target(pod) == EngineTarget(
        name="serving/vllm-qwen3-6d9f7c5b8-x2x7q",
        url="http://10.244.1.23:8000",
        kind="vllm",
        model="qwen3-4b",
        namespace="serving",
        pod="vllm-qwen3-6d9f7c5b8-x2x7q",
        container="vllm",
    )


def variant(labels: dict | None = None, annotations: dict | None = None, **status) -> dict:
    pod = vllm_pod()
    pod["metadata"]["labels"] = {"app": "x", **(labels or {})}
    pod["metadata"]["annotations"] = annotations or {}
    pod["status"].update(status)
    return pod


ENGINE = {"llmobs.io/engine": "vllm"}


@pytest.mark.parametrize(
    ("labels", "annotations", "expect"),
    [
        ({}, {}, None),  # not opted in
        ({}, {"llmobs.io/engine": "sglang", "llmobs.io/port": "8000"}, ("sglang", 8000, "vllm")),
        ({"llmobs.io/engine": "auto"}, {"llmobs.io/port": "2020"}, (None, 2020, "log-shipper")),
        ({"llmobs.io/engine": "vllm"}, {"llmobs.io/port": "9999"}, ("vllm", 9999, "")),
        (ENGINE, {"llmobs.io/port": "9999", "llmobs.io/container": "vllm"}, ("vllm", 9999, "vllm")),
        ({"llmobs.io/engine": "vllm"}, {}, "2 declared container ports"),
        ({"llmobs.io/engine": "vllm"}, {"llmobs.io/port": "grpc"}, "0 container ports"),
        ({"llmobs.io/engine": "vllm"}, {"llmobs.io/port": "70000"}, "not a port number"),
        ({"llmobs.io/engine": "bogus"}, {"llmobs.io/port": "8000"}, "is not auto or one of"),
        (ENGINE, {"llmobs.io/port": "8000", "llmobs.io/scheme": "ftp"}, "not http or https"),
        (ENGINE, {"llmobs.io/port": "8000", "llmobs.io/path": "x y"}, "not an absolute"),
    ],
)  # fmt: skip
def test_opt_in(labels: dict, annotations: dict, expect: object) -> None:
    found = engine_target(pod_from_api(variant(labels, annotations)))
    if expect is None or isinstance(expect, str):
        assert found is None if expect is None else expect in str(found)
        return
    assert isinstance(found, EngineTarget)
    assert (found.kind, int(found.url.rsplit(":", 1)[1]), found.container) == expect


def test_a_pod_address_that_is_no_ip_is_not_scraped() -> None:
    """status.podIP goes into the target URL: '10.0.0.1@elsewhere.example' would name another host."""
    for address in ("10.0.0.1@elsewhere.example", "elsewhere.example", "10.0.0.1/x"):
        raw = vllm_pod()
        raw["status"]["podIP"] = address
        assert "is not an IP address" in str(engine_target(pod_from_api(raw)))


def test_a_label_from_an_annotation_is_bounded() -> None:
    """llmobs.io/model becomes the model label of every series; an annotation may hold 256 KiB."""
    for key in ("llmobs.io/model", "llmobs.io/container"):
        raw = vllm_pod()
        raw["metadata"]["annotations"][key] = "m" * 300
        assert "longer than 256 characters" in str(engine_target(pod_from_api(raw)))


def test_only_running_pods_with_an_address_are_scraped() -> None:
    annotations = {"llmobs.io/engine": "vllm", "llmobs.io/port": "8000"}
    assert engine_target(pod_from_api(variant(annotations=annotations, phase="Pending"))) is None
    assert engine_target(pod_from_api(variant(annotations=annotations, podIP=None))) is None
    deleting = variant(annotations=annotations)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-05T11:00:00Z"
    assert engine_target(pod_from_api(deleting)) is None


def test_ipv6_https_and_path() -> None:
    annotations = {"llmobs.io/engine": "triton_trtllm", "llmobs.io/port": "8002", "llmobs.io/scheme": "https",
                   "llmobs.io/path": "/metrics"}  # fmt: skip
    found = engine_target(pod_from_api(variant(annotations=annotations, podIP="fd00::17")))
    assert isinstance(found, EngineTarget) and found.url == "https://[fd00::17]:8002/metrics"


def test_malformed_objects_read_as_empty() -> None:
    pod = pod_from_api(
        {"metadata": "x", "spec": {"containers": [1, {"ports": ["x", {"containerPort": "80"}]}]}}
    )
    assert pod.name == "" and pod.containers[0].ports == () and engine_target(pod) is None


# -- list and watch ------------------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    server = FakeKubeApi().start()
    yield server
    server.close()


@pytest.fixture
def watcher_for(api: FakeKubeApi) -> Iterator[Callable[..., PodWatcher]]:
    started: list[PodWatcher] = []

    def start(**kwargs) -> PodWatcher:
        settings = kwargs.pop("settings", ApiSettings(api.url))
        watcher = PodWatcher(settings, NODE, backoff_seconds=(0.05, 0.2), **kwargs).start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.close()


def names(watcher: PodWatcher) -> list[str]:
    return sorted(p.name for p in watcher.pods().values())


def test_lists_in_pages_then_follows_the_watch(
    api: FakeKubeApi, watcher_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "PAGE_SIZE", 2)
    for i in range(5):
        api.put(make_pod(f"engine-{i}", f"uid-{i}"))
    api.put(make_pod("elsewhere", "uid-x", node="gpu-node-2"))
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    assert names(watcher) == [f"engine-{i}" for i in range(5)]
    lists = api.lists()
    assert [r.get("continue") for r in lists] == [None, "2", "4"]
    assert all(r["fieldSelector"] == f"spec.nodeName={NODE}" and r["limit"] == "2" for r in lists)
    wait_until(lambda: api.watches())
    watch = api.watches()[0]
    assert watch["allowWatchBookmarks"] == "true" and watch["resourceVersion"] == "106"
    assert watch["fieldSelector"] == f"spec.nodeName={NODE}" and int(watch["timeoutSeconds"]) > 0

    api.put(make_pod("engine-5", "uid-5"))  # ADDED
    wait_until(lambda: "engine-5" in names(watcher))
    moved = make_pod("engine-0", "uid-0")
    moved["status"]["phase"] = "Succeeded"  # MODIFIED
    api.put(moved)
    wait_until(lambda: watcher.pods()["uid-0"].phase == "Succeeded")
    api.delete("uid-1")  # DELETED
    wait_until(lambda: "engine-1" not in names(watcher))
    assert [t.pod for t in watcher.engine_targets()] == ["engine-2", "engine-3", "engine-4", "engine-5"]
    assert watcher.error_counts() == {} and watcher.relists == 0


def test_a_bookmark_moves_the_version_the_next_watch_starts_from(api: FakeKubeApi, watcher_for) -> None:
    api.put(make_pod("engine-0", "uid-0"))
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: api.watches())
    version = api.bookmark()
    api.put(make_pod("other", "uid-o", node="gpu-node-2"))  # not ours: no event reaches the watcher
    wait_until(lambda: watcher._version == version)
    api.drop_watches()  # the server ends the watch (its timeoutSeconds, a dropped connection)
    wait_until(lambda: len(api.watches()) >= 2)
    assert api.watches()[1]["resourceVersion"] == version
    assert len(api.lists()) == 1 and watcher.relists == 0  # resumed, not relisted


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event", "http-410"])
def test_gone_clears_the_cache_by_listing_again(
    api: FakeKubeApi, watcher_for, as_event: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "SHORT_WATCH_SECONDS", 0.0)  # the test ends a watch before any event
    api.gone_as_event = as_event
    api.put(make_pod("engine-0", "uid-0"))
    api.put(make_pod("engine-1", "uid-1"))
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: api.watches())
    # While the watch is down, a pod goes and the history is compacted past the watcher's version.
    api.drop_watches()
    api.delete("uid-1")
    api.compact()
    wait_until(lambda: watcher.relists >= 1)
    wait_until(lambda: names(watcher) == ["engine-0"])
    assert len(api.lists()) >= 2 and watcher.error_counts() == {}


def test_failures_are_counted_backed_off_and_recovered(
    api: FakeKubeApi, watcher_for, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    api.status_override = 403
    api.put(make_pod("engine-0", "uid-0"))
    with caplog.at_level(logging.INFO, logger="exporter.kubernetes"):
        watcher = watcher_for(settings=ApiSettings(api.url, token_file=token))
        wait_until(lambda: watcher.error_counts().get("auth", 0) >= 3)
        assert not watcher.synced()
        api.status_override = None
        assert watcher.wait_synced(5)
    assert names(watcher) == ["engine-0"]
    assert all(r["authorization"] == "Bearer s3cr3t-token" for r in api.requests)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RBAC" in warnings[0].getMessage()  # logged once, not per retry
    assert "s3cr3t" not in caplog.text


def test_connection_refused_is_counted(watcher_for) -> None:
    watcher = watcher_for(settings=ApiSettings("http://127.0.0.1:9"))
    wait_until(lambda: watcher.error_counts().get("connect", 0) >= 2)


def test_malformed_and_oversized_events_are_protocol_errors(
    api: FakeKubeApi, watcher_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "MAX_MESSAGE_BYTES", 64 * 1024)
    api.put(make_pod("engine-0", "uid-0"))
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: api.watches())
    huge = make_pod("engine-1", "uid-1")
    huge["metadata"]["annotations"]["note"] = "x" * (128 * 1024)
    api.put(huge)
    wait_until(lambda: watcher.error_counts().get("protocol", 0) >= 1)
    assert "engine-1" not in names(watcher)  # never half-read
    api.history.append((api.version + 1, {"type": "SURPRISE", "object": {}}))
    api.version += 1
    api.drop_watches()
    wait_until(lambda: watcher.error_counts().get("protocol", 0) >= 2)
    assert names(watcher) == ["engine-0"]


def test_pod_limit(api: FakeKubeApi, watcher_for) -> None:
    for i in range(3):
        api.put(make_pod(f"engine-{i}", f"uid-{i}"))
    watcher = watcher_for(max_pods=2)
    assert watcher.wait_synced(5)
    assert len(watcher.pods()) == 2 and watcher.error_counts() == {"pod_limit": 1}


def test_unusable_opt_in_is_logged_once(
    api: FakeKubeApi, watcher_for, caplog: pytest.LogCaptureFixture
) -> None:
    pod = make_pod("engine-0", "uid-0")
    del pod["metadata"]["annotations"]["llmobs.io/port"]
    api.put(pod)
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    with caplog.at_level(logging.WARNING, logger="exporter.kubernetes"):
        assert watcher.engine_targets() == [] and watcher.engine_targets() == []
    assert caplog.text.count("is not scraped") == 1


def test_close_ends_an_open_watch_promptly(api: FakeKubeApi, watcher_for) -> None:
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: api.watches())
    started = time.monotonic()
    watcher.close()
    assert time.monotonic() - started < 3 and not watcher._thread.is_alive()


def test_in_cluster_settings() -> None:
    settings = ApiSettings.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    )
    assert settings.url == "https://[fd00::1]:6443"
    assert str(settings.token_file).endswith("serviceaccount/token")
    with pytest.raises(kube.WatchFailure):
        ApiSettings.in_cluster({})


def test_fixture_pods_are_not_modified(api: FakeKubeApi) -> None:
    pod = vllm_pod()
    api.put(copy.deepcopy(pod))
    assert vllm_pod() == pod


# -- a server that would make the loop spin ------------------------------------------------------------------


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event", "http-410"])
def test_gone_after_every_list_backs_off(api: FakeKubeApi, watcher_for, as_event: bool) -> None:
    """Every watch answered 410 right after its list: 675 list+watch pairs in 3 s before, hammering the API
    server from every node; now the lists back off as client-go's do."""
    api.gone_as_event = as_event
    api.put(make_pod("engine-0", "uid-0"))
    api.compact()  # the listed version is already older than the history: every watch is 410
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: watcher.relists >= 3, timeout=10)  # relisting goes on, at the backoff's pace
    before = len(api.lists())
    time.sleep(1.0)
    assert len(api.lists()) - before <= 6  # backoff 0.05 s doubling to 0.2 s here: at most ~5 a second
    assert names(watcher) == ["engine-0"]


def test_a_watch_ended_at_once_is_a_failure(api: FakeKubeApi, watcher_for) -> None:
    """A proxy closing each watch before its first event made 1,700 watches a second."""
    api.end_watches_at_once = True
    api.put(make_pod("engine-0", "uid-0"))
    watcher = watcher_for()
    assert watcher.wait_synced(5)
    wait_until(lambda: watcher.error_counts().get("protocol", 0) >= 2, timeout=10)
    before = len(api.watches())
    time.sleep(1.0)
    assert len(api.watches()) - before <= 6
    api.end_watches_at_once = False
    api.drop_watches()
    time.sleep(0.5)
    api.put(make_pod("engine-1", "uid-1"))
    wait_until(lambda: names(watcher) == ["engine-0", "engine-1"])


def test_a_list_that_never_ends_is_a_failure(
    api: FakeKubeApi, watcher_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "MAX_PAGES", 5)
    monkeypatch.setattr(kube, "PAGE_SIZE", 1)
    api.endless_list = True
    api.put(make_pod("engine-0", "uid-0"))
    watcher = watcher_for()
    wait_until(lambda: watcher.error_counts().get("protocol", 0) >= 1)
    assert not watcher.synced() and len(api.lists()) >= 5  # five pages, then the failure


def test_a_token_no_header_can_carry_is_refused_unseen(
    api: FakeKubeApi, watcher_for, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """httpx refused `Bearer abc\\ns3cret` by quoting the header in its error, which was logged."""
    token = tmp_path / "token"
    token.write_text("abc\ns3cr3t-token\n")
    with caplog.at_level(logging.INFO, logger="exporter.kubernetes"):
        watcher = watcher_for(settings=ApiSettings(api.url, token_file=token))
        wait_until(lambda: watcher.error_counts().get("auth", 0) >= 2)
    assert api.requests == [] and "s3cr3t" not in caplog.text and "not shown" in caplog.text
