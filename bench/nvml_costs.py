#!/usr/bin/env python3
"""What each NVML call the exporter makes costs on this machine: wall time and the calling thread's CPU time.

    python3 bench/nvml_costs.py [--gpu 0] [--calls 50]

The exporter's CPU on a GPU host is mostly these calls (its own Python around them is measured with
bench/nvml_stub.c: bench/RESULTS.md), so this table says which readings are worth reading less often. Per
call: median wall and median thread CPU (time.thread_time) over --calls calls (PCIe throughput: 5; the
Xid event wait: 3 waits of 500 ms), and whether it answered. Without NVML it says why and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def timed(call: Callable[[], Any], count: int) -> tuple[float, float, str]:
    walls, cpus, answer = [], [], "ok"
    for _ in range(count):
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            call()
        except Exception as exc:  # NVMLError: NotSupported, NotFound (no process), Timeout (no event)...
            answer = type(exc).__name__.removeprefix("NVMLError_")
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.thread_time() - cpu0)
    return statistics.median(walls) * 1e6, statistics.median(cpus) * 1e6, answer


def calls(n: Any, h: Any) -> list[tuple[str, Callable[[], Any], int]]:
    gpm = (n.nvmlGpmSampleAlloc(), n.nvmlGpmSampleAlloc())
    fields = [n.NVML_FI_DEV_MEMORY_TEMP, 230, 74, 76, 269, 270, 271]  # what the sampler reads

    def gpm_metrics() -> Any:
        n.nvmlGpmSampleGet(h, gpm[0])
        time.sleep(0.11)
        n.nvmlGpmSampleGet(h, gpm[1])
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 4
        request.sample1, request.sample2 = gpm
        metrics = (n.NVML_GPM_METRIC_SM_UTIL, n.NVML_GPM_METRIC_SM_OCCUPANCY,
                   n.NVML_GPM_METRIC_ANY_TENSOR_UTIL, n.NVML_GPM_METRIC_DRAM_BW_UTIL)  # fmt: skip
        for i, metric in enumerate(metrics):
            request.metrics[i].metricId = metric
        cpu0 = time.thread_time()
        n.nvmlGpmMetricsGet(request)
        return time.thread_time() - cpu0

    def event_wait() -> Any:
        events = n.nvmlEventSetCreate()
        try:
            n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, events)
            return n.nvmlEventSetWait_v2(events, 500)
        finally:
            n.nvmlEventSetFree(events)

    clocks = (n.NVML_CLOCK_GRAPHICS, n.NVML_CLOCK_SM, n.NVML_CLOCK_MEM)
    ecc = [(e, c) for e in (0, 1) for c in (0, 1)]
    batched = [3, 4, 5, 6, 142, 143, 144, 145]  # ECC SBE/DBE volatile/aggregate, remapped rows
    return [
        ("refresher: GetMemoryInfo (v2)", lambda: n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2), 50),
        ("refresher: GetUtilizationRates", lambda: n.nvmlDeviceGetUtilizationRates(h), 50),
        ("refresher: GetPowerUsage", lambda: n.nvmlDeviceGetPowerUsage(h), 50),
        ("refresher: GetEnforcedPowerLimit", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h), 50),
        ("refresher: GetTemperature", lambda: n.nvmlDeviceGetTemperature(h, 0), 50),
        ("refresher: GetPerformanceState", lambda: n.nvmlDeviceGetPerformanceState(h), 50),
        ("refresher: GetCurrPcieLinkGeneration", lambda: n.nvmlDeviceGetCurrPcieLinkGeneration(h), 50),
        ("refresher: GetCurrPcieLinkWidth", lambda: n.nvmlDeviceGetCurrPcieLinkWidth(h), 50),
        ("refresher: GetClockInfo x3", lambda: [n.nvmlDeviceGetClockInfo(h, c) for c in clocks], 50),
        ("refresher: GetCurrentClocksEventReasons", lambda: n.nvmlDeviceGetCurrentClocksEventReasons(h), 50),
        ("refresher: GetTotalEccErrors x4", lambda: [n.nvmlDeviceGetTotalEccErrors(h, *x) for x in ecc], 50),
        ("refresher: GetRemappedRows", lambda: n.nvmlDeviceGetRemappedRows(h), 50),
        ("(ECC x4 + rows, batched) GetFieldValues", lambda: n.nvmlDeviceGetFieldValues(h, batched), 50),
        ("sampler: GetTotalEnergyConsumption", lambda: n.nvmlDeviceGetTotalEnergyConsumption(h), 20),
        ("sampler: GetFieldValues (7 fields)", lambda: n.nvmlDeviceGetFieldValues(h, fields), 20),
        ("sampler: GetPcieReplayCounter", lambda: n.nvmlDeviceGetPcieReplayCounter(h), 20),
        ("sampler: GetPcieThroughput (TX)", lambda: n.nvmlDeviceGetPcieThroughput(h, 0), 5),
        ("sampler: GetComputeRunningProcesses", lambda: n.nvmlDeviceGetComputeRunningProcesses(h), 20),
        ("sampler: GetProcessUtilization", lambda: n.nvmlDeviceGetProcessUtilization(h, 0), 20),
        ("sampler: GPM SampleGet x2 + MetricsGet (wall includes a 110 ms sleep)", gpm_metrics, 5),
        ("Xid thread: EventSetWait_v2 (500 ms, no event)", event_wait, 3),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--calls", type=int, default=50, help="calls per fast reading (default 50)")
    args = parser.parse_args()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
        name = pynvml.nvmlDeviceGetName(handle)
    except Exception as exc:
        print(f"NVML unavailable ({type(exc).__name__}: {exc}): no call costs on this machine.")
        return 0
    print(f"GPU {args.gpu}: {name}, driver {pynvml.nvmlSystemGetDriverVersion()}")
    print("\n| call (nvmlDevice...) | median wall us | median thread CPU us | answer | calls |")
    print("| --- | --- | --- | --- | --- |")
    for label, call, count in calls(pynvml, handle):
        number = max(1, count * args.calls // 50)
        wall, cpu, answer = timed(call, number)
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {answer} | {number} |")
    pynvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
