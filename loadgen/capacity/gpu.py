"""The GPU memory an engine can use: given (`24GiB`, `80GB`, `24564MiB`) or read through NVML.

vLLM takes cudaMemGetInfo's total, which leaves out what the driver reserves for itself; NVML's memory
info v2 reports that reserve separately (an H100 80GB: 81,559 MiB total, 480 MiB reserved, so 79.18 GiB
for vLLM), so the NVML figure is total minus reserved. Older drivers without v2: the total.
"""

from __future__ import annotations

import contextlib
import re
from types import ModuleType

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.model import GIB
from loadgen.capacity.plan import Gpu

_UNITS = {
    "": None,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, what: str = "size") -> int:
    """`24GiB`, `80GB`, `512MiB`, `1.5GiB` -> bytes. A unit is required: GB and GiB differ by 7 %."""
    match = _SIZE.match(str(text))
    unit = _UNITS.get(match.group(2).lower(), 0) if match else 0
    if not match or not unit:
        raise CapacityError(f"{what} {text!r}: a number with a unit, e.g. 24GiB, 80GB, 24564MiB")
    return int(float(match.group(1)) * unit)


def read_nvml(index: int = 0, nvml: ModuleType | object | None = None) -> Gpu:
    """GPU `index` through NVML; CapacityError when there is no NVML (no driver) or no such GPU."""
    import pynvml  # nvidia-ml-py, a dependency; it needs the driver's library at init

    if nvml is None:
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError subclasses, or OSError-like library errors
        raise CapacityError(f"no NVML here ({exc}): give --gpu-memory, e.g. 24GiB") from None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)
            usable, reserved = int(info.total) - int(info.reserved), int(info.reserved)
        except Exception:  # no v2 (older driver, MIG instance): the total
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            usable, reserved = int(info.total), 0
    except CapacityError:
        raise
    except Exception as exc:
        raise CapacityError(f"NVML GPU {index}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    source = f"NVML, GPU {index} ({name})"
    if reserved:
        source += f": {(usable + reserved) / GIB:.2f} GiB less {reserved / GIB:.2f} GiB the driver reserves"
    return Gpu(usable, source, name)
