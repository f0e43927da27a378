"""The pod list + watch in the exporter (exporter/discovery/kubernetes.py, plain httpx) beside the
Kubernetes client libraries that could do it: the official `kubernetes` client and `lightkube`.

Each runs in a fresh interpreter against the same fake API server (tests/exporter/fake_kube_api.py, the
published list and watch shapes) on loopback: import time, resident memory after import and after
listing, time to list N pods (pages of 500) and to receive M watch events (ADDED; N + M stays under the
exporter's 1,000-pod budget), and the installed size of the library with the dependencies the exporter
does not already have.

    python bench/k8s_client.py --clients-python /path/to/venv/bin/python --pods 500 --events 400

`--clients-python` is an interpreter with `kubernetes` and `lightkube` installed (pip install
kubernetes==37.0.2 lightkube==1.0.1 psutil httpx); ours runs in this checkout's interpreter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.exporter.fake_kube_api import FakeKubeApi  # noqa: E402
from tests.exporter.test_kubernetes_discovery import make_pod  # noqa: E402

NODE = "gpu-node-1"

COMMON = textwrap.dedent(
    """\
    import json, os, sys, time
    started = time.perf_counter()
    import psutil
    URL, NODE, PODS, EVENTS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rss = lambda: psutil.Process().memory_info().rss
    """
)

OURS_SCRIPT = COMMON + textwrap.dedent(
    """\
    import exporter.config  # loaded in the exporter before discovery: not counted
    t0 = time.perf_counter()
    from exporter.discovery.kubernetes import ApiSettings, PodWatcher
    imported = time.perf_counter() - t0
    rss_import = rss()
    watcher = PodWatcher(ApiSettings(URL), NODE)
    t0 = time.perf_counter()
    watcher.start()
    watcher.wait_synced(60)
    listed = time.perf_counter() - t0
    rss_list = rss()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the bench sends the events now
    t0 = time.perf_counter()
    while len(watcher.pods()) < PODS + EVENTS:
        time.sleep(0.001)
    watched = time.perf_counter() - t0
    watcher.close()
    print(json.dumps({"import_s": imported, "rss_import": rss_import, "list_s": listed,
                      "rss_list": rss_list, "watch_s": watched, "pods": len(watcher.pods())}))
    """
)

OFFICIAL = COMMON + textwrap.dedent(
    """\
    t0 = time.perf_counter()
    from kubernetes import client, watch
    imported = time.perf_counter() - t0
    rss_import = rss()
    api = client.CoreV1Api(client.ApiClient(client.Configuration(host=URL)))
    t0 = time.perf_counter()
    pods, token = {}, None
    while True:
        page = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=" + NODE, limit=500,
                                               _continue=token)
        pods.update((p.metadata.uid, p) for p in page.items)
        token = page.metadata._continue
        if not token:
            break
    version = page.metadata.resource_version
    listed = time.perf_counter() - t0
    rss_list = rss()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for event in watch.Watch().stream(api.list_pod_for_all_namespaces, field_selector="spec.nodeName=" + NODE,
                                      resource_version=version, allow_watch_bookmarks=True):
        pods[event["object"].metadata.uid] = event["object"]
        if len(pods) >= PODS + EVENTS:
            break
    watched = time.perf_counter() - t0
    print(json.dumps({"import_s": imported, "rss_import": rss_import, "list_s": listed,
                      "rss_list": rss_list, "watch_s": watched, "pods": len(pods)}))
    """
)

LIGHTKUBE = COMMON + textwrap.dedent(
    """\
    t0 = time.perf_counter()
    from lightkube import Client, KubeConfig
    from lightkube.config.models import Cluster, User
    from lightkube.resources.core_v1 import Pod
    imported = time.perf_counter() - t0
    rss_import = rss()
    config = KubeConfig.from_one(cluster=Cluster(server=URL), user=User(token="x"))
    kube = Client(config=config, trust_env=False)
    t0 = time.perf_counter()
    items = kube.list(Pod, namespace="*", fields={"spec.nodeName": NODE}, chunk_size=500)
    pods = {p.metadata.uid: p for p in items}
    version = items.resourceVersion
    listed = time.perf_counter() - t0
    rss_list = rss()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for _, pod in kube.watch(Pod, namespace="*", fields={"spec.nodeName": NODE}, resource_version=version):
        pods[pod.metadata.uid] = pod
        if len(pods) >= PODS + EVENTS:
            break
    watched = time.perf_counter() - t0
    print(json.dumps({"import_s": imported, "rss_import": rss_import, "list_s": listed,
                      "rss_list": rss_list, "watch_s": watched, "pods": len(pods)}))
    """
)


def run(python: str, script: str, pods: int, events: int) -> dict:
    api = FakeKubeApi().start()
    try:
        for i in range(pods):
            api.put(make_pod(f"pod-{i}", f"uid-{i}"))
        process = subprocess.Popen(
            [python, "-c", script, api.url, NODE, str(pods), str(events)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert process.stdout and process.stdin
        json.loads(process.stdout.readline())  # listed; its watch is open (or about to be)
        time.sleep(0.5)
        process.stdin.write("go\n")
        process.stdin.flush()
        for i in range(events):
            api.put(make_pod(f"new-{i}", f"new-uid-{i}"))
        result = json.loads(process.stdout.readline())
        process.wait(30)
        return result
    finally:
        api.close()


SIZE = textwrap.dedent(
    """\
    import importlib.metadata as m, os, re, sys

    def closure(name, seen):
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            return seen
        try:
            dist = m.distribution(name)
        except m.PackageNotFoundError:
            return seen
        seen.add(key)
        for req in dist.requires or []:
            if "extra ==" not in req:
                closure(re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0], seen)
        return seen

    ours = set()
    for name in sys.argv[2:]:
        closure(name, ours)
    total = 0
    for key in closure(sys.argv[1], set()) - ours:
        for f in m.distribution(key).files or []:
            path = f.locate()
            total += os.path.getsize(path) if os.path.isfile(path) else 0
    print(total)
    """
)
# The exporter's runtime dependencies that a Kubernetes client could share (pyproject.toml).
OURS = ["httpx", "pyyaml", "prometheus-client", "psutil"]


def installed_mb(python: str, package: str) -> float:
    """Size on disk of `package` and its dependencies, less what the exporter depends on already."""
    return int(subprocess.check_output([python, "-c", SIZE, package, *OURS], text=True)) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients-python", required=True)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--events", type=int, default=400)
    args = parser.parse_args()
    rows = [
        ("ours (httpx)", sys.executable, OURS_SCRIPT, ""),
        ("kubernetes 37.0.2", args.clients_python, OFFICIAL, "kubernetes"),
        ("lightkube 1.0.1", args.clients_python, LIGHTKUBE, "lightkube"),
    ]  # fmt: skip
    print(f"{args.pods} pods listed, then {args.events} ADDED events watched; one fresh interpreter each\n")
    print("| client | import s | RSS import MB | list s | RSS list MB | watch s | extra install MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, python, script, package in rows:
        r = run(python, script, args.pods, args.events)
        assert r["pods"] == args.pods + args.events, r
        size = installed_mb(python, package) if package else 0.0
        print(f"| {name} | {r['import_s']:.3f} | {r['rss_import'] / 1e6:.1f} | {r['list_s']:.3f} | "
              f"{r['rss_list'] / 1e6:.1f} | {r['watch_s']:.3f} | {size:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
