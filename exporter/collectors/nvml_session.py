"""One NVML session shared by the GPU collector, its background sampler and its Xid event thread.

The NVML binding is injected (`nvml`: the `pynvml` module from nvidia-ml-py, or a fake exposing the same
functions and raising real `pynvml.NVMLError` subclasses), so tests exercise exactly this code.

Errors are sorted into four groups:
- not supported: the GPU lacks the field; remembered per GPU and call, never asked again, never an error;
- GPU lost: only that GPU is marked down (`gpu_up 0`) and re-acquired by UUID every retry period;
- NVML-wide (uninitialised, driver gone, version mismatch): NVML is re-initialised every retry period;
- anything else: counted in gpu_nvml_errors_total{call, error}; that reading is absent this time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pynvml

log = logging.getLogger("exporter.gpu")


def nvml_constant(name: str, value: int) -> int:
    """pynvml's constant, or NVML's documented number where an older nvidia-ml-py lacks the name."""
    return int(getattr(pynvml, name, value))


UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
GPU_LOST = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, nvml_constant("NVML_ERROR_GPU_NOT_FOUND", 28)})
NVML_WIDE = frozenset(
    {
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    }
)
# A host without a GPU driver: said once in the log, not counted as an error on every retry.
NO_DRIVER = frozenset({pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED})

_ERROR_NAMES = {
    value: name.removeprefix("NVML_ERROR_").lower()
    for name, value in vars(pynvml).items()
    if name.startswith("NVML_ERROR_") and isinstance(value, int)
}


def error_name(exc: pynvml.NVMLError) -> str:
    """A bounded label value: `not_supported`, `gpu_is_lost`, ...; unknown codes become `code_<n>`."""
    return _ERROR_NAMES.get(exc.value, f"code_{exc.value}")


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# One reading, as the refresher pass (gpu.py) and the sampler (nvml_sampler.py) produce them:
# (family, label values starting with gpu and uuid, value); gpu.build_families turns them into families.
Sample = tuple[str, tuple[str, ...], float]


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU (re-exported by exporter.collectors.gpu, where other wings import it)."""

    gpu: str
    uuid: str
    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True)
class Device:
    """A GPU, or a MIG instance of one (index "0/1": parent 0, GPU instance 1)."""

    index: str
    uuid: str
    handle: Any
    name: str
    pci_bus_id: str
    mig_mode: str  # "enabled", "disabled", "unsupported", or "instance" for a MIG device
    parent_handle: Any = None
    gpu_instance_id: int | None = None
    fan_count: int = 0
    max_clocks_hz: dict[str, float] = field(default_factory=dict)
    nvlinks: tuple[int, ...] = ()
    gpm_supported: bool = False

    @property
    def is_mig(self) -> bool:
        return self.parent_handle is not None

    @property
    def labels(self) -> tuple[str, str]:
        return (self.index, self.uuid)


class NvmlSession:
    """NVML initialisation, device discovery, retries and error bookkeeping, safe to share between threads."""

    def __init__(self, nvml: Any = pynvml, retry_seconds: float = 30.0) -> None:
        self.nvml = nvml
        self.retry_seconds = retry_seconds
        # Held while NVML calls run on the scrape path and while NVML is (re)initialised, so a scrape never
        # uses handles of a session being torn down. Slow sampler calls do not hold it.
        self.lock = threading.Lock()
        self.available = False
        self.devices: tuple[Device, ...] = ()
        self.driver_version = ""
        self.cuda_driver_version = ""
        self.generation = 0  # bumped on every successful (re)initialisation
        self._lost: dict[str, float] = {}  # uuid -> when it was last tried
        self._unsupported: set[tuple[str, str]] = set()
        self._errors: Counter[tuple[str, str, str, str]] = Counter()  # (gpu, uuid, call, error)
        self._init_errors: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._next_init = 0.0
        self._said_unavailable = False
        self._reinit_needed = False
        self._nvml_failing = False  # an NVML-wide error since the last initialisation

    # --- lifecycle -------------------------------------------------------------------------------------

    def ensure_initialised(self, before_reinit: Callable[[], None] | None = None) -> bool:
        """Initialise NVML if needed (once per retry period at most); re-acquire lost GPUs. Not on scrapes.

        before_reinit runs before a live session is torn down (the Xid thread must let go of it first).
        """
        now = time.monotonic()
        if (not self.available or self._reinit_needed) and now >= self._next_init:
            self._next_init = now + self.retry_seconds
            if self.available and before_reinit is not None:
                before_reinit()
            self._initialise()
        if self.available:
            self._retry_lost(now)
        return self.available

    def _initialise(self) -> None:
        with self.lock:
            if self.available or self._reinit_needed:
                self._shutdown_locked()
            self._reinit_needed = False  # set again by discovery when it had to skip a GPU
            try:
                self.nvml.nvmlInit()
                self.driver_version = text(self.nvml.nvmlSystemGetDriverVersion())
                self.cuda_driver_version = self._cuda_version()
                self.devices = self._discover()
            except pynvml.NVMLError as exc:
                self._init_failed(exc)
                return
            self.available = True
            self._nvml_failing = False
            self._lost.clear()
            self.generation += 1
            self._said_unavailable = False
        log.info(
            "NVML initialised: driver %s, CUDA %s, %d device(s)",
            self.driver_version,
            self.cuda_driver_version,
            len(self.devices),
        )

    def _init_failed(self, exc: pynvml.NVMLError) -> None:
        self.available = False
        self.devices = ()
        if exc.value not in NO_DRIVER:
            with self._counts_lock:
                self._init_errors[error_name(exc)] += 1
        if not self._said_unavailable:
            self._said_unavailable = True
            log.warning(
                "NVML unavailable (%s): serving host metrics only, gpu_nvml_available 0; retrying every %gs",
                exc,
                self.retry_seconds,
            )
        with contextlib.suppress(pynvml.NVMLError):
            self.nvml.nvmlShutdown()

    def _shutdown_locked(self) -> None:
        self.available = False
        self.devices = ()
        with contextlib.suppress(pynvml.NVMLError):
            self.nvml.nvmlShutdown()

    def shutdown(self) -> None:
        with self.lock:
            if self.available:
                self._shutdown_locked()

    def _cuda_version(self) -> str:
        try:
            version = int(self.nvml.nvmlSystemGetCudaDriverVersion())
        except pynvml.NVMLError:
            return ""
        return f"{version // 1000}.{version % 1000 // 10}"

    # --- discovery -------------------------------------------------------------------------------------

    def _discover(self) -> tuple[Device, ...]:
        nvml = self.nvml
        devices: list[Device] = []
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                devices += self._discover_gpu(i)
            except pynvml.NVMLError as exc:
                if exc.value in NVML_WIDE:
                    raise
                # One GPU that does not answer must not hide the others: skip it, count it, and
                # discover again at the next retry period.
                with self._counts_lock:
                    self._init_errors[error_name(exc)] += 1
                self._reinit_needed = True
                log.error("GPU %d does not answer NVML (%s); serving the others, retrying", i, exc)
        return tuple(devices)

    def _discover_gpu(self, i: int) -> list[Device]:
        nvml = self.nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpu = Device(
            index=str(i),
            uuid=text(nvml.nvmlDeviceGetUUID(handle)),
            handle=handle,
            name=text(nvml.nvmlDeviceGetName(handle)),
            pci_bus_id=self._optional(lambda: text(nvml.nvmlDeviceGetPciInfo(handle).busId), ""),
            mig_mode=self._mig_mode(handle),
            fan_count=self._optional(lambda: int(nvml.nvmlDeviceGetNumFans(handle)), 0),
            max_clocks_hz=self._max_clocks(handle),
            nvlinks=self._nvlinks(handle),
            gpm_supported=self._gpm_supported(handle),
        )
        return [gpu, *self._mig_devices(gpu)] if gpu.mig_mode == "enabled" else [gpu]

    def _optional(self, read: Any, default: Any) -> Any:
        try:
            return read()
        except pynvml.NVMLError:
            return default

    def _mig_mode(self, handle: Any) -> str:
        try:
            current, _pending = self.nvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError:
            return "unsupported"
        return "enabled" if current == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled"

    def _max_clocks(self, handle: Any) -> dict[str, float]:
        clocks = {}
        for clock, kind in CLOCKS.items():
            mhz = self._optional(lambda k=kind: self.nvml.nvmlDeviceGetMaxClockInfo(handle, k), None)
            if mhz:
                clocks[clock] = float(mhz) * 1e6
        return clocks

    def _nvlinks(self, handle: Any) -> tuple[int, ...]:
        links = []
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
            try:
                if self.nvml.nvmlDeviceGetNvLinkState(handle, link) == pynvml.NVML_FEATURE_ENABLED:
                    links.append(link)
            except pynvml.NVMLError as exc:
                if exc.value in UNSUPPORTED or link == 0:
                    break  # no NVLink on this GPU
                continue  # INVALID_ARGUMENT past the last link, or an inactive one
        return tuple(links)

    def _gpm_supported(self, handle: Any) -> bool:
        support = self._optional(lambda: self.nvml.nvmlGpmQueryDeviceSupport(handle), None)
        return bool(support is not None and support.isSupportedDevice)

    def _mig_devices(self, parent: Device) -> list[Device]:
        nvml = self.nvml
        result = []
        count = self._optional(lambda: int(nvml.nvmlDeviceGetMaxMigDeviceCount(parent.handle)), 0)
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent.handle, i)
                gi = int(nvml.nvmlDeviceGetGpuInstanceId(handle))
                uuid = text(nvml.nvmlDeviceGetUUID(handle))
            except pynvml.NVMLError as exc:
                if exc.value not in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                    with self._counts_lock:  # not just an empty slot: this instance stays unseen
                        self._init_errors[error_name(exc)] += 1
                continue
            result.append(
                Device(
                    index=f"{parent.index}/{gi}",
                    uuid=uuid,
                    handle=handle,
                    name=self._optional(lambda h=handle: text(nvml.nvmlDeviceGetName(h)), parent.name),
                    pci_bus_id=parent.pci_bus_id,
                    mig_mode="instance",
                    parent_handle=parent.handle,
                    gpu_instance_id=gi,
                    gpm_supported=parent.gpm_supported,
                )
            )
        return result

    # --- lost GPUs -------------------------------------------------------------------------------------

    @property
    def reinit_pending(self) -> bool:
        return self._reinit_needed

    @property
    def usable(self) -> bool:
        """Initialised and no NVML-wide error since: scrapes may call NVML."""
        return self.available and not self._nvml_failing

    def is_lost(self, device: Device) -> bool:
        return device.uuid in self._lost

    def _retry_lost(self, now: float) -> None:
        for uuid, tried in list(self._lost.items()):
            if now - tried < self.retry_seconds:
                continue
            self._lost[uuid] = now
            try:
                handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
                self.nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            except pynvml.NVMLError:
                continue
            with self.lock:
                self.devices = tuple(replace(d, handle=handle) if d.uuid == uuid else d for d in self.devices)
                self._lost.pop(uuid, None)
            log.warning("GPU %s answers again", uuid)

    # --- calls -----------------------------------------------------------------------------------------

    def call(self, device: Device, name: str, *args: Any) -> Any:
        """nvml.<name>(device.handle, *args), or None when unsupported or failed (failures are recorded).

        "Unsupported" is remembered per call and arguments: a GPU may offer the SM clock but not another.
        """
        key = (device.uuid, name if not args else f"{name}:{','.join(map(str, args))}")
        if key in self._unsupported or device.uuid in self._lost:
            return None
        try:
            function = getattr(self.nvml, name)
        except AttributeError:  # an nvidia-ml-py older than the call
            self._unsupported.add(key)
            return None
        try:
            return function(device.handle, *args)
        except pynvml.NVMLError as exc:
            if exc.value in UNSUPPORTED:
                self._unsupported.add(key)
            else:
                self.record_failure(device, name, exc)
            return None

    def record_failure(self, device: Device, call: str, exc: pynvml.NVMLError) -> None:
        if exc.value in UNSUPPORTED:
            self._unsupported.add((device.uuid, call))
            return
        with self._counts_lock:
            self._errors[(*device.labels, call, error_name(exc))] += 1
        if exc.value in GPU_LOST:
            if device.uuid not in self._lost:
                self._lost[device.uuid] = time.monotonic()
                log.error(
                    "GPU %s (%s) is lost: %s; retrying every %gs",
                    device.uuid,
                    device.index,
                    exc,
                    self.retry_seconds,
                )
        elif exc.value in NVML_WIDE:
            self._reinit_needed = self._nvml_failing = True

    def mark_unsupported(self, device: Device, call: str) -> None:
        self._unsupported.add((device.uuid, call))

    def is_unsupported(self, device: Device, call: str) -> bool:
        return (device.uuid, call) in self._unsupported

    def error_counts(self) -> dict[tuple[str, str, str, str], int]:
        with self._counts_lock:
            return dict(self._errors)

    def init_error_counts(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._init_errors)


CLOCKS = {"graphics": pynvml.NVML_CLOCK_GRAPHICS, "sm": pynvml.NVML_CLOCK_SM, "memory": pynvml.NVML_CLOCK_MEM}
