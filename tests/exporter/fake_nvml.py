"""A fake NVML: the pynvml functions the exporter calls, with NVML's real behaviour and real error classes.

It returns pynvml's own ctypes structures (utilization, memory v1/v2, field values, process
utilization samples, GPM metric requests) and raises real `pynvml.NVMLError` subclasses
(`pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)` is an `NVMLError_NotSupported`), following what was
measured on an H100 (reference/gpu_exporters.md 5.3): memory v2 total = used + free + reserved, v1 used =
v2 used + reserved, fan speed NotSupported on datacenter boards, process utilization NotFound when idle,
GPM values only for samples more than 100 ms apart, every call GPU_IS_LOST once the GPU fell off the bus,
UNINITIALIZED before nvmlInit. Every call is recorded with the thread that made it, and calls listed
in `slow` sleep, so tests can check which thread paid for what.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
MIB = 1024 * 1024


def error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeMig:
    gpu_instance_id: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    processes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    pci_bus_id: str = "00000000:18:00.0"
    utilization: tuple[int, int] = (99, 32)
    memory_total: int = 85_520_809_984
    memory_reserved: int = 503_316_480
    memory_used: int = 1_194_131_456
    power_mw: int = 690_000
    power_limit_mw: int = 700_000
    energy_mj: int = 123_456_789
    temperature: int = 61
    memory_temperature: int = 70
    clocks_mhz: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_CLOCK_GRAPHICS: 1485,
            pynvml.NVML_CLOCK_SM: 1485,
            pynvml.NVML_CLOCK_MEM: 2619,
        }
    )
    max_clocks_mhz: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_CLOCK_GRAPHICS: 1980,
            pynvml.NVML_CLOCK_SM: 1980,
            pynvml.NVML_CLOCK_MEM: 2619,
        }
    )
    pstate: int = 0
    fans: list[int] | None = None  # None: NotSupported (passive datacenter board)
    clock_event_reasons: int = 0x4  # SwPowerCap, as under load
    clock_event_ns: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: 2_500_000_000,
            pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST: 0,
            pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: 0,
            pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: 1_000_000,
            pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: 0,
        }
    )
    recovery_action: int | None = 0
    pcie: tuple[int, int] = (5, 4)  # generation, width... set per test
    pcie_throughput_kb: tuple[int, int] = (1000, 2000)  # tx, rx KB/s
    pcie_replays: int = 3
    ecc: dict[tuple[int, int], int] | None = field(
        default_factory=lambda: {(0, 0): 1, (0, 1): 5, (1, 0): 0, (1, 1): 0}
    )  # (error type, counter type) -> count; None: ECC off
    remapped_rows: tuple[int, int, int, int] | None = (2, 0, 0, 0)
    nvlinks: dict[int, tuple[int, int]] = field(default_factory=dict)  # link -> (tx KiB, rx KiB)
    nvlink_errors: dict[tuple[int, int], int] = field(default_factory=dict)  # (link, counter) -> count
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)
    process_sm: dict[int, int] = field(default_factory=dict)  # pid -> sm %
    gpm: dict[int, float] | None = None  # GPM metric id -> value %; None: not supported
    mig: list[FakeMig] | None = None  # None: MIG unsupported; []: disabled
    unsupported: set[str] = field(default_factory=set)  # call names that raise NotSupported
    failing: dict[str, int] = field(default_factory=dict)  # call name -> NVML error code
    lost: bool = False


@dataclass(frozen=True)
class Handle:
    gpu: int
    gpu_instance_id: int | None = None


class FakeNvml:
    """Pass as `nvml=` to GpuCollector. Attribute access to an unknown function raises AttributeError."""

    def __init__(
        self, gpus: list[FakeGpu], init_error: int | None = None, slow: dict[str, float] | None = None
    ):
        self.gpus = gpus
        self.init_error = init_error
        self.slow = slow or {}
        self.initialised = False
        self.init_calls = 0
        self.calls: list[tuple[str, str]] = []  # (thread name, function)
        self._calls_lock = threading.Lock()
        self.events: queue.Queue[tuple[int, int]] = queue.Queue()  # (gpu index, xid) to deliver
        self._gpm_samples: dict[int, tuple[float, int]] = {}  # address -> (time, gpu)

    # --- plumbing -----------------------------------------------------------------------------------

    def _enter(self, name: str, handle: Handle | None = None) -> FakeGpu | None:
        with self._calls_lock:
            self.calls.append((threading.current_thread().name, name))
        if name in self.slow:
            time.sleep(self.slow[name])
        if not self.initialised:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        gpu = self.gpus[handle.gpu]
        if gpu.lost:
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if name in gpu.unsupported:
            raise error(NOT_SUPPORTED)
        if name in gpu.failing:
            raise error(gpu.failing[name])
        return gpu

    def calls_on(self, thread_name: str) -> list[str]:
        with self._calls_lock:
            return [name for thread, name in self.calls if thread == thread_name]

    def _mig(self, handle: Handle) -> FakeMig:
        gpu = self.gpus[handle.gpu]
        return next(m for m in gpu.mig or [] if m.gpu_instance_id == handle.gpu_instance_id)

    # --- init and system ----------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        with self._calls_lock:
            self.calls.append((threading.current_thread().name, "nvmlInit"))
        self.init_calls += 1
        if self.init_error is not None:
            raise error(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        if not self.initialised:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "580.159.04"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 13000

    # --- discovery ----------------------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Handle:
        self._enter("nvmlDeviceGetHandleByUUID")
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                if gpu.lost:
                    raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
                return Handle(i)
        raise error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        gpu = self._enter("nvmlDeviceGetUUID", handle)
        return self._mig(handle).uuid if handle.gpu_instance_id is not None else gpu.uuid

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        gpu = self._enter("nvmlDeviceGetName", handle)
        return self._mig(handle).name if handle.gpu_instance_id is not None else gpu.name

    def nvmlDeviceGetPciInfo(self, handle: Handle) -> Any:
        gpu = self._enter("nvmlDeviceGetPciInfo", handle)
        info = pynvml.nvmlPciInfo_t()
        info.busId = gpu.pci_bus_id.encode()
        return info

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        gpu = self._enter("nvmlDeviceGetMigMode", handle)
        if gpu.mig is None:
            raise error(NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        gpu = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        instances = gpu.mig or []
        if index >= len(instances):
            raise error(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(handle.gpu, instances[index].gpu_instance_id)

    def nvmlDeviceGetGpuInstanceId(self, handle: Handle) -> int:
        self._enter("nvmlDeviceGetGpuInstanceId", handle)
        if handle.gpu_instance_id is None:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.gpu_instance_id

    def nvmlDeviceGetNumFans(self, handle: Handle) -> int:
        gpu = self._enter("nvmlDeviceGetNumFans", handle)
        if gpu.fans is None:
            raise error(NOT_SUPPORTED)
        return len(gpu.fans)

    def nvmlDeviceGetMaxClockInfo(self, handle: Handle, kind: int) -> int:
        gpu = self._enter("nvmlDeviceGetMaxClockInfo", handle)
        return gpu.max_clocks_mhz[kind]

    def nvmlDeviceGetNvLinkState(self, handle: Handle, link: int) -> int:
        gpu = self._enter("nvmlDeviceGetNvLinkState", handle)
        if not gpu.nvlinks:
            raise error(NOT_SUPPORTED)
        if link >= 18:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pynvml.NVML_FEATURE_ENABLED if link in gpu.nvlinks else pynvml.NVML_FEATURE_DISABLED

    def nvmlGpmQueryDeviceSupport(self, handle: Handle) -> Any:
        gpu = self._enter("nvmlGpmQueryDeviceSupport", handle)
        support = pynvml.c_nvmlGpmSupport_t()
        support.isSupportedDevice = int(gpu.gpm is not None)
        return support

    # --- fast readings ------------------------------------------------------------------------------

    def _physical(self, name: str, handle: Handle) -> FakeGpu:
        gpu = self._enter(name, handle)
        assert gpu is not None
        if handle.gpu_instance_id is not None:
            raise error(NOT_SUPPORTED)  # per-instance power, clocks, ... do not exist
        return gpu

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Any:
        gpu = self._physical("nvmlDeviceGetUtilizationRates", handle)
        if gpu.mig:
            raise error(NOT_SUPPORTED)  # not on MIG-enabled GPUs
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization[0], memory=gpu.utilization[1])

    def nvmlDeviceGetMemoryInfo(self, handle: Handle, version: int | None = None) -> Any:
        gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
        if handle.gpu_instance_id is not None:
            mig = self._mig(handle)
            if version:
                raise error(NOT_SUPPORTED)  # v2 is not offered on MIG handles
            return pynvml.c_nvmlMemory_t(
                total=mig.memory_total, free=mig.memory_total - mig.memory_used, used=mig.memory_used
            )
        free = gpu.memory_total - gpu.memory_used - gpu.memory_reserved
        if version:
            if version != pynvml.nvmlMemory_v2:
                raise error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
            return pynvml.c_nvmlMemory_v2_t(
                version=version,
                total=gpu.memory_total,
                reserved=gpu.memory_reserved,
                free=free,
                used=gpu.memory_used,
            )
        return pynvml.c_nvmlMemory_t(
            total=gpu.memory_total, free=free, used=gpu.memory_used + gpu.memory_reserved
        )

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        return self._physical("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPerformanceState(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetPerformanceState", handle).pstate

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetCurrPcieLinkGeneration", handle).pcie[0]

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetCurrPcieLinkWidth", handle).pcie[1]

    def nvmlDeviceGetClockInfo(self, handle: Handle, kind: int) -> int:
        gpu = self._physical("nvmlDeviceGetClockInfo", handle)
        if kind not in gpu.clocks_mhz:
            raise error(NOT_SUPPORTED)
        return gpu.clocks_mhz[kind]

    def nvmlDeviceGetFanSpeed_v2(self, handle: Handle, fan: int) -> int:
        gpu = self._physical("nvmlDeviceGetFanSpeed_v2", handle)
        if gpu.fans is None:
            raise error(NOT_SUPPORTED)
        return gpu.fans[fan]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_event_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        gpu = self._physical("nvmlDeviceGetTotalEccErrors", handle)
        if gpu.ecc is None:
            raise error(NOT_SUPPORTED)
        return gpu.ecc[(error_type, counter_type)]

    def nvmlDeviceGetRemappedRows(self, handle: Handle) -> tuple[int, int, int, int]:
        gpu = self._physical("nvmlDeviceGetRemappedRows", handle)
        if gpu.remapped_rows is None:
            raise error(NOT_SUPPORTED)
        return gpu.remapped_rows

    # --- slow readings ------------------------------------------------------------------------------

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetPcieThroughput(self, handle: Handle, counter: int) -> int:
        gpu = self._physical("nvmlDeviceGetPcieThroughput", handle)
        return gpu.pcie_throughput_kb[0 if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else 1]

    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int:
        return self._physical("nvmlDeviceGetPcieReplayCounter", handle).pcie_replays

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Handle, link: int, counter: int) -> int:
        gpu = self._physical("nvmlDeviceGetNvLinkErrorCounter", handle)
        if link not in gpu.nvlinks:
            raise error(NOT_SUPPORTED)
        return gpu.nvlink_errors.get((link, counter), 0)

    def nvmlDeviceGetFieldValues(self, handle: Handle, field_ids: list[Any]) -> Any:
        gpu = self._physical("nvmlDeviceGetFieldValues", handle)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for i, item in enumerate(field_ids):
            fid, scope = item if isinstance(item, tuple) else (item, 0)
            values[i].fieldId, values[i].scopeId = fid, scope
            number = self._field(gpu, fid, scope)
            if number is None:
                values[i].nvmlReturn = NOT_SUPPORTED
            else:
                values[i].nvmlReturn = pynvml.NVML_SUCCESS
                values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                values[i].value.ullVal = number
        return values

    def _field(self, gpu: FakeGpu, fid: int, scope: int) -> int | None:
        if fid == pynvml.NVML_FI_DEV_MEMORY_TEMP:
            return gpu.memory_temperature
        if fid == pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:
            return gpu.recovery_action
        if fid in gpu.clock_event_ns:
            return gpu.clock_event_ns[fid]
        if fid == pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX and scope in gpu.nvlinks:
            return gpu.nvlinks[scope][0]
        if fid == pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX and scope in gpu.nvlinks:
            return gpu.nvlinks[scope][1]
        return None

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[Any]:
        gpu = self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        found = self._mig(handle).processes if handle.gpu_instance_id is not None else gpu.processes
        return [
            pynvml.nvmlFriendlyObject(
                {
                    "pid": pid,
                    "usedGpuMemory": used,
                    "gpuInstanceId": 0xFFFFFFFF,
                    "computeInstanceId": 0xFFFFFFFF,
                }
            )
            for pid, used in found
        ]

    def nvmlDeviceGetProcessUtilization(self, handle: Handle, since_us: int) -> list[Any]:
        gpu = self._physical("nvmlDeviceGetProcessUtilization", handle)
        if not gpu.process_sm:
            raise error(pynvml.NVML_ERROR_NOT_FOUND)  # no process ran since `since_us`
        now_us = int(time.time() * 1e6)
        return [
            pynvml.c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=now_us, smUtil=sm, memUtil=sm // 3)
            for pid, sm in gpu.process_sm.items()
        ]

    # --- GPM -----------------------------------------------------------------------------------------

    def nvmlGpmSampleAlloc(self) -> Any:
        self._enter("nvmlGpmSampleAlloc")
        return pynvml.c_nvmlGpmSample_t(pynvml.struct_c_nvmlGpmSample_t())

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self._enter("nvmlGpmSampleFree")
        self._gpm_samples.pop(ctypes.addressof(sample.contents), None)

    def nvmlGpmSampleGet(self, handle: Handle, sample: Any) -> Any:
        gpu = self._physical("nvmlGpmSampleGet", handle)
        if gpu.gpm is None:
            raise error(NOT_SUPPORTED)
        self._gpm_samples[ctypes.addressof(sample.contents)] = (time.monotonic(), handle.gpu)
        return sample

    def nvmlGpmMigSampleGet(self, handle: Handle, gpu_instance_id: int, sample: Any) -> Any:
        gpu = self._physical("nvmlGpmMigSampleGet", handle)
        if gpu.gpm is None:
            raise error(NOT_SUPPORTED)
        self._gpm_samples[ctypes.addressof(sample.contents)] = (time.monotonic(), handle.gpu)
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        self._enter("nvmlGpmMetricsGet")
        first = self._gpm_samples.get(ctypes.addressof(request.sample1.contents))
        second = self._gpm_samples.get(ctypes.addressof(request.sample2.contents))
        if first is None or second is None:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpm = self.gpus[second[1]].gpm or {}
        close = abs(second[0] - first[0]) < 0.1  # below NVML's refresh: zeros, DRAM BW NaN
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            metric.nvmlReturn = pynvml.NVML_SUCCESS
            value = gpm.get(metric.metricId, 0.0)
            if close:
                value = float("nan") if metric.metricId == pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL else 0.0
            metric.value = value
        return request

    # --- events --------------------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> Any:
        self._enter("nvmlEventSetCreate")
        return SimpleNamespace(registered=[])

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self._enter("nvmlEventSetFree")

    def nvmlDeviceRegisterEvents(self, handle: Handle, types: int, event_set: Any) -> None:
        self._physical("nvmlDeviceRegisterEvents", handle)
        event_set.registered.append(handle)

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        self._enter("nvmlEventSetWait_v2")
        try:
            gpu, xid = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise error(pynvml.NVML_ERROR_TIMEOUT) from None
        return SimpleNamespace(
            device=Handle(gpu), eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid, gpuInstanceId=0
        )
