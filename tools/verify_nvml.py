#!/usr/bin/env python3
"""Check the exporter's GPU readings against nvidia-smi on a real GPU, idle and under a bf16 matmul load.

Run from the repository root on a GPU machine (needs nvidia-smi, nvidia-ml-py, prometheus_client, psutil,
pyyaml, and torch for the load; no network):

    python3 tools/verify_nvml.py [--gpu 0] [--load-seconds 40] [--out verify.md]

It starts the exporter (`python -m exporter`, GPU collector on, 1 s sampler), then at each snapshot reads
`nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` and the exporter's /metrics at the same
moment (two threads), and prints a markdown table: field, nvidia-smi value, exporter value, unit, agree?
Snapshots: 1 idle, then 3 under load. Only fields this nvidia-smi offers (from --help-query-gpu) are
compared. Exit status 0 when every row agrees within its tolerance, 1 otherwise, 2 when it cannot run.
The whole run takes about a minute (PyTorch start-up included) and is bounded well under 3 minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
NA = {"", "[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", "[Insufficient Permissions]"}

LOAD = textwrap.dedent(
    """
    import sys, time, torch
    seconds = float(sys.argv[1])
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
    """
)


@dataclass(frozen=True)
class Check:
    """One nvidia-smi field and the exporter reading it corresponds to, in nvidia-smi's unit."""

    field: str
    family: str
    labels: tuple[tuple[str, str], ...]
    unit: str
    to_smi: Callable[[float], object]  # exporter value -> nvidia-smi's representation
    tolerance: Callable[[float, float], bool] | None = None  # numeric fields: (smi, exporter) -> agree
    note: str = ""


def within(absolute: float = 0.0, relative: float = 0.0) -> Callable[[float, float], bool]:
    return lambda smi, ours: abs(smi - ours) <= max(absolute, relative * max(abs(smi), abs(ours)))


def mib(value: float) -> float:
    return value / MIB


def same(value: float) -> float:
    return value


def active(value: float) -> str:
    return "Active" if value else "Not Active"


REASONS = [
    "gpu_idle",
    "applications_clocks_setting",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "display_clock_setting",
]
COUNTED_REASONS = [
    "sw_power_cap",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
]


def checks() -> list[Check]:
    sampled = "read up to 0.5 s apart (refresher pass); moves under load"
    result = [
        Check("utilization.gpu", "gpu_utilization_ratio", (), "%", lambda v: v * 100, within(10), sampled),
        Check(
            "utilization.memory",
            "gpu_memory_bandwidth_utilization_ratio",
            (),
            "%",
            lambda v: v * 100,
            within(10),
            sampled,
        ),
        Check("memory.total", "gpu_memory_total_bytes", (), "MiB", mib, within(1)),
        Check("memory.reserved", "gpu_memory_reserved_bytes", (), "MiB", mib, within(1)),
        Check(
            "memory.used",
            "gpu_memory_used_bytes",
            (),
            "MiB",
            mib,
            within(2, 0.01),
            "NVML v2: excludes reserved; a gap of memory.reserved means nvidia-smi counts it as used",
        ),
        Check("memory.free", "gpu_memory_free_bytes", (), "MiB", mib, within(2, 0.01)),
        Check("power.draw", "gpu_power_usage_watts", (), "W", same, within(5, 0.1), "1 s average on Hopper"),
        Check("power.draw.average", "gpu_power_usage_watts", (), "W", same, within(5, 0.1)),
        Check("enforced.power.limit", "gpu_power_limit_watts", (), "W", same, within(0.5)),
        Check(
            "power.limit", "gpu_power_limit_watts", (), "W", same, within(0.5), "management limit; may differ"
        ),
        Check("temperature.gpu", "gpu_temperature_celsius", (), "C", same, within(2)),
        Check(
            "temperature.memory", "gpu_memory_temperature_celsius", (), "C", same, within(2), "sampler, 1 s"
        ),
        Check(
            "clocks.sm",
            "gpu_clock_hertz",
            (("clock", "sm"),),
            "MHz",
            lambda v: v / 1e6,
            within(15, 0.05),
            sampled,
        ),
        Check(
            "clocks.gr",
            "gpu_clock_hertz",
            (("clock", "graphics"),),
            "MHz",
            lambda v: v / 1e6,
            within(15, 0.05),
            sampled,
        ),
        Check(
            "clocks.mem", "gpu_clock_hertz", (("clock", "memory"),), "MHz", lambda v: v / 1e6, within(1, 0.01)
        ),
        Check(
            "clocks.max.sm", "gpu_clock_max_hertz", (("clock", "sm"),), "MHz", lambda v: v / 1e6, within(1)
        ),
        Check(
            "clocks.max.gr",
            "gpu_clock_max_hertz",
            (("clock", "graphics"),),
            "MHz",
            lambda v: v / 1e6,
            within(1),
        ),
        Check(
            "clocks.max.mem",
            "gpu_clock_max_hertz",
            (("clock", "memory"),),
            "MHz",
            lambda v: v / 1e6,
            within(1),
        ),
        Check("pstate", "gpu_performance_state", (), "", lambda v: f"P{int(v)}"),
        Check("pcie.link.gen.current", "gpu_pcie_link_generation", (), "", same, within(0)),
        Check("pcie.link.width.current", "gpu_pcie_link_width", (), "lanes", same, within(0)),
        Check("fan.speed", "gpu_fan_speed_ratio", (("fan", "0"),), "%", lambda v: v * 100, within(2)),
        Check(
            "ecc.errors.corrected.volatile.total",
            "gpu_ecc_errors_total",
            (("severity", "corrected"), ("scope", "volatile")),
            "",
            same,
            within(0),
        ),
        Check(
            "ecc.errors.uncorrected.volatile.total",
            "gpu_ecc_errors_total",
            (("severity", "uncorrected"), ("scope", "volatile")),
            "",
            same,
            within(0),
        ),
        Check(
            "ecc.errors.corrected.aggregate.total",
            "gpu_ecc_errors_total",
            (("severity", "corrected"), ("scope", "aggregate")),
            "",
            same,
            within(0),
        ),
        Check(
            "ecc.errors.uncorrected.aggregate.total",
            "gpu_ecc_errors_total",
            (("severity", "uncorrected"), ("scope", "aggregate")),
            "",
            same,
            within(0),
        ),
        Check(
            "remapped_rows.correctable",
            "gpu_remapped_rows_total",
            (("cause", "correctable"),),
            "",
            same,
            within(0),
        ),
        Check(
            "remapped_rows.uncorrectable",
            "gpu_remapped_rows_total",
            (("cause", "uncorrectable"),),
            "",
            same,
            within(0),
        ),
        Check("remapped_rows.pending", "gpu_remapped_rows_pending", (), "", lambda v: "Yes" if v else "No"),
        Check("remapped_rows.failure", "gpu_remapped_rows_failed", (), "", lambda v: "Yes" if v else "No"),
    ]
    for reason in REASONS:
        for prefix in ("clocks_event_reasons", "clocks_throttle_reasons"):
            result.append(
                Check(
                    f"{prefix}.{reason}",
                    "gpu_clock_event_reason_active",
                    (("reason", reason),),
                    "",
                    active,
                    note=sampled,
                )
            )
    for reason in COUNTED_REASONS:
        result.append(
            Check(
                f"clocks_event_reasons_counters.{reason}",
                "gpu_clock_event_duration_seconds_total",
                (("reason", reason),),
                "us",
                lambda v: v * 1e6,
                within(2e6, 0.01),
                "sampler, 1 s: may lag by up to a second of throttling",
            )
        )
    return result


# --- nvidia-smi ---------------------------------------------------------------------------------------


def smi_fields() -> set[str]:
    """Every field nvidia-smi accepts, aliases too: a help line reads `"clocks.current.sm" or "clocks.sm"`."""
    help_text = run(["nvidia-smi", "--help-query-gpu"], timeout=30)
    lines = (line for line in help_text.splitlines() if line.startswith('"'))
    return {name for line in lines for name in re.findall(r'"([a-z0-9_.]+)"', line)}


def smi_query(gpu: int, fields: list[str]) -> dict[str, str]:
    out = run(
        ["nvidia-smi", f"--id={gpu}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    )
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")]
    if len(values) != len(fields):
        raise RuntimeError(f"nvidia-smi returned {len(values)} values for {len(fields)} fields: {out!r}")
    return dict(zip(fields, values, strict=True))


def smi_processes(gpu_uuid: str) -> dict[int, float]:
    out = run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory,gpu_uuid", "--format=csv,noheader,nounits"],
        timeout=30,
    )
    result = {}
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2] == gpu_uuid and parts[0].isdigit():
            result[int(parts[0])] = float(parts[1]) if parts[1] not in NA else float("nan")
    return result


def run(argv: list[str], timeout: float = 20) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout


# --- exporter -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def exporter_process(port: int, log_path: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", "--no-collector.host"]
    argv += ["--gpu.sampler-interval-seconds", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"exporter exited ({process.returncode}): {log_path.read_text()[-2000:]}"
                    )
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                        break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"exporter not ready in 30 s: {log_path.read_text()[-2000:]}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


Series = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Series:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return series


def pick(series: Series, name: str, labels: dict[str, str]) -> float | None:
    for sample_labels, value in series.get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


# --- comparison ---------------------------------------------------------------------------------------


@dataclass
class Row:
    field: str
    smi: str
    ours: str
    unit: str
    agree: bool
    note: str = ""


def compare(check: Check, smi_value: str, series: Series, gpu_labels: dict[str, str]) -> Row:
    value = pick(series, check.family, {**gpu_labels, **dict(check.labels)})
    smi_missing = smi_value in NA
    if value is None or smi_missing:
        ours = "absent" if value is None else fmt(check.to_smi(value))
        agree = value is None and smi_missing
        return Row(
            check.field, smi_value or "(empty)", ours, check.unit, agree, "both n/a" if agree else check.note
        )
    converted = check.to_smi(value)
    if check.tolerance is not None:
        try:
            smi_number = float(smi_value)
        except ValueError:
            return Row(
                check.field, smi_value, fmt(converted), check.unit, False, "nvidia-smi value not numeric"
            )
        agree = check.tolerance(smi_number, float(converted))  # type: ignore[arg-type]
    else:
        agree = str(converted).lower() == smi_value.lower()
    return Row(check.field, smi_value, fmt(converted), check.unit, agree, check.note)


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.2f}"
    return str(value)


def snapshot(url: str, gpu: int, fields: list[str]) -> tuple[dict[str, str], Series, float]:
    """nvidia-smi and /metrics read at the same moment, from two threads."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.time()
        smi = pool.submit(smi_query, gpu, fields)
        ours = pool.submit(scrape, url)
        return smi.result(timeout=30), ours.result(timeout=30), started


def identity_rows(smi: dict[str, str], series: Series, gpu: int) -> tuple[list[Row], dict[str, str]]:
    info = next((labels for labels, _ in series.get("gpu_info", []) if labels.get("gpu") == str(gpu)), None)
    if info is None:
        raise RuntimeError(f"the exporter publishes no gpu_info for GPU {gpu}: is NVML available to it?")
    rows = [
        Row("uuid", smi.get("uuid", ""), info["uuid"], "", smi.get("uuid") == info["uuid"]),
        Row("name", smi.get("name", ""), info["name"], "", smi.get("name") == info["name"]),
        Row(
            "driver_version",
            smi.get("driver_version", ""),
            info["driver_version"],
            "",
            smi.get("driver_version") == info["driver_version"],
        ),
        Row(
            "pci.bus_id",
            smi.get("pci.bus_id", ""),
            info["pci_bus_id"],
            "",
            smi.get("pci.bus_id", "").lower() == info["pci_bus_id"].lower(),
        ),
    ]
    if "mig.mode.current" in smi:
        mig = smi["mig.mode.current"]
        expected = {"Enabled": "enabled", "Disabled": "disabled"}.get(mig, "unsupported")
        rows.append(Row("mig.mode.current", mig, info["mig_mode"], "", expected == info["mig_mode"]))
    return rows, {"gpu": str(gpu), "uuid": info["uuid"]}


def table(title: str, rows: list[Row]) -> str:
    lines = [
        f"### {title}",
        "",
        "| field | nvidia-smi | exporter | unit | agree? | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.field} | {r.smi} | {r.ours} | {r.unit} | {'yes' if r.agree else '**NO**'} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def freshness_rows(series: Series, gpu_labels: dict[str, str], at: float) -> list[Row]:
    rows = []
    for labels, stamp in series.get("gpu_sample_timestamp_seconds", []):
        if labels.get("uuid") == gpu_labels["uuid"]:
            age = at - stamp
            rows.append(
                Row(
                    f"age of sampler source {labels['source']}",
                    "-",
                    f"{age:.2f}",
                    "s",
                    age <= 2.5,
                    "<= 2.5 s with a 1 s sampler",
                )
            )
    return rows


def process_rows(series: Series, gpu_labels: dict[str, str]) -> list[Row]:
    rows = []
    for pid, used_mib in smi_processes(gpu_labels["uuid"]).items():
        ours = pick(series, "gpu_process_memory_used_bytes", {**gpu_labels, "pid": str(pid)})
        value = "absent" if ours is None else f"{ours / MIB:.0f}"
        agree = ours is not None and abs(ours / MIB - used_mib) <= 2
        rows.append(Row(f"process {pid} used_memory", f"{used_mib:.0f}", value, "MiB", agree))
    return rows


def gpm_rows(series: Series, gpu_labels: dict[str, str], name: str) -> list[Row]:
    """No nvidia-smi field to compare with: under a bf16 GEMM on an H100, SM and tensor activity read
    ~0.95 and ~0.92 (reference/gpu_exporters.md 5.3); require more than 0.5 on Hopper and newer."""
    hopper_or_newer = any(
        tag in name for tag in ("H100", "H200", "H800", "H20", "GH200", "B100", "B200", "GB200")
    )
    rows = []
    for family in ("gpu_sm_active_ratio", "gpu_tensor_active_ratio"):
        value = pick(series, family, gpu_labels)
        if value is None:
            rows.append(
                Row(f"{family} (GPM)", "-", "absent", "", not hopper_or_newer, "GPM needs Hopper or newer")
            )
        else:
            rows.append(
                Row(
                    f"{family} (GPM)",
                    "-",
                    f"{value:.3f}",
                    "ratio",
                    value > 0.5,
                    "expect > 0.5 under the GEMM",
                )
            )
    return rows


def energy_row(
    before: tuple[Series, float], after: tuple[Series, float], watts: list[float], labels: dict[str, str]
) -> Row:
    e0 = pick(before[0], "gpu_energy_joules_total", labels)
    e1 = pick(after[0], "gpu_energy_joules_total", labels)
    t0 = pick(before[0], "gpu_sample_timestamp_seconds", {**labels, "source": "energy"})
    t1 = pick(after[0], "gpu_sample_timestamp_seconds", {**labels, "source": "energy"})
    if None in (e0, e1, t0, t1) or not watts or t1 == t0:
        return Row(
            "energy: ΔJ/Δt vs mean power.draw", "n/a", "n/a", "W", False, "energy or its timestamp missing"
        )
    rate = (e1 - e0) / (t1 - t0)  # type: ignore[operator]
    mean = sum(watts) / len(watts)
    return Row(
        "energy: ΔJ/Δt vs mean power.draw",
        f"{mean:.0f}",
        f"{rate:.0f}",
        "W",
        within(10, 0.1)(mean, rate),
        "over the load snapshots",
    )


def wait_for_ready(load: subprocess.Popen, deadline: float) -> None:
    """Until the load prints "ready" (PyTorch started, matmuls warm); never blocks past the deadline."""
    assert load.stdout is not None
    while time.monotonic() < deadline:
        if load.poll() is not None:
            raise RuntimeError(f"the matmul load exited with {load.returncode} (is torch with CUDA there?)")
        readable, _, _ = select.select([load.stdout], [], [], 1.0)
        if readable and "ready" in load.stdout.readline():
            return
    raise RuntimeError("the matmul load did not start in time")


def main() -> int:
    try:
        return verify()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"verify_nvml: cannot complete: {exc}", file=sys.stderr)
        return 2


def verify() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", type=int, default=0, help="NVML / nvidia-smi index (default 0)")
    parser.add_argument(
        "--load-seconds", type=float, default=40, help="length of the matmul load (default 40)"
    )
    parser.add_argument("--snapshots", type=int, default=3, help="snapshots under load (default 3)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_args()
    deadline = time.monotonic() + 170  # the whole run stays under 3 minutes

    available = smi_fields()
    wanted = [c for c in checks() if c.field in available]
    # older drivers name them clocks_throttle_reasons.*; use those only where the new names are missing
    wanted = [
        c
        for c in wanted
        if not c.field.startswith("clocks_throttle_reasons.")
        or c.field.replace("throttle", "event") not in available
    ]
    identity = [
        f for f in ("uuid", "name", "driver_version", "pci.bus_id", "mig.mode.current") if f in available
    ]
    fields = list(dict.fromkeys(identity + [c.field for c in wanted]))
    report = [
        f"# Exporter vs nvidia-smi on GPU {args.gpu}\n",
        f"nvidia-smi offers {len(available)} query fields; compared: {len(wanted)}.\n",
    ]
    all_rows: list[Row] = []
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / "verify_nvml_exporter.log"

    with exporter_process(free_port(), log_path) as url:
        time.sleep(2.5)  # two sampler passes, so GPM and the sampled fields have values
        smi, series, at = snapshot(url, args.gpu, fields)
        rows, gpu_labels = identity_rows(smi, series, args.gpu)
        rows += [compare(c, smi[c.field], series, gpu_labels) for c in wanted] + freshness_rows(
            series, gpu_labels, at
        )
        report.append(table("Idle", rows))
        all_rows += rows

        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_labels["uuid"]}
        load = subprocess.Popen(
            [sys.executable, "-c", LOAD, str(args.load_seconds)], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            wait_for_ready(load, deadline - 60)
            time.sleep(3)  # utilization and power settle
            watts, first, last = [], None, None
            for i in range(args.snapshots):
                smi, series, at = snapshot(url, args.gpu, fields)
                first = first or (series, at)
                last = (series, at)
                if smi.get("power.draw", "") not in NA:
                    watts.append(float(smi["power.draw"]))
                rows = [compare(c, smi[c.field], series, gpu_labels) for c in wanted]
                rows += freshness_rows(series, gpu_labels, at) + process_rows(series, gpu_labels)
                gpm = [
                    (name, pick(series, name, gpu_labels))
                    for name in (
                        "gpu_sm_active_ratio",
                        "gpu_sm_occupancy_ratio",
                        "gpu_tensor_active_ratio",
                        "gpu_dram_bandwidth_utilization_ratio",
                    )
                ]
                rows += gpm_rows(series, gpu_labels, smi.get("name", ""))
                report.append(table(f"Under bf16 matmul load, snapshot {i + 1}", rows))
                report.append(
                    "Exporter-only (GPM, no nvidia-smi field): "
                    + ", ".join(f"{n}={v if v is None else round(v, 3)}" for n, v in gpm)
                    + "\n"
                )
                all_rows += rows
                time.sleep(2)
            if first and last:
                energy = energy_row(first, last, watts, gpu_labels)
                report.append(table("Energy counter", [energy]))
                all_rows.append(energy)
        finally:
            load.kill()
            load.wait()

    disagreements = [r for r in all_rows if not r.agree]
    report.append(f"\n**{len(all_rows) - len(disagreements)} of {len(all_rows)} rows agree.**\n")
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if not disagreements else 1


if __name__ == "__main__":
    sys.exit(main())
