"""Keep GPU 0 busy for SECONDS: a CUDA process holding GIB of memory (default 8) and running a spinning
kernel back to back (100 % utilization), through the driver's libcuda alone (no toolkit, no torch).

    python3 tools/gpu_busy.py 380 [GIB]

For measuring the exporters on a busy GPU with a process on it (bench/RESULTS.md): the kernel is PTX,
compiled by the driver for whatever GPU it finds.
"""

import ctypes
import sys
import time

PTX = rb"""
.version 7.0
.target sm_50
.address_size 64
.visible .entry spin(.param .u64 out, .param .u32 n)
{
  .reg .u32 %r<4>;
  .reg .f32 %f<3>;
  .reg .pred %p;
  .reg .u64 %rd<3>;
  ld.param.u64 %rd1, [out];
  ld.param.u32 %r1, [n];
  mov.u32 %r2, 0;
  mov.f32 %f1, 0f3F800000;
LOOP:
  fma.rn.f32 %f1, %f1, 0f3F7FFFFF, 0f3A000000;
  add.u32 %r2, %r2, 1;
  setp.lt.u32 %p, %r2, %r1;
  @%p bra LOOP;
  cvta.to.global.u64 %rd2, %rd1;
  st.global.f32 [%rd2], %f1;
  ret;
}
"""


def main() -> None:
    seconds = float(sys.argv[1])
    gib = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(name: str, result: int) -> None:
        if result != 0:
            text = ctypes.c_char_p()
            cuda.cuGetErrorString(result, ctypes.byref(text))
            raise SystemExit(f"{name}: {result} {text.value}")

    check("cuInit", cuda.cuInit(0))
    device, context = ctypes.c_int(), ctypes.c_void_p()
    check("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(device), 0))
    check("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device))
    check("cuCtxSetCurrent", cuda.cuCtxSetCurrent(context))
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    check("cuModuleLoadData", cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX)))
    check("cuModuleGetFunction", cuda.cuModuleGetFunction(ctypes.byref(function), module, b"spin"))
    memory, size = ctypes.c_uint64(), ctypes.c_size_t(int(gib * 2**30))
    check("cuMemAlloc", cuda.cuMemAlloc_v2(ctypes.byref(memory), size))
    check("cuMemsetD8", cuda.cuMemsetD8_v2(memory, ctypes.c_ubyte(1), size))
    iterations = ctypes.c_uint32(2_000_000)
    params = (ctypes.c_void_p * 2)(
        ctypes.cast(ctypes.byref(memory), ctypes.c_void_p),
        ctypes.cast(ctypes.byref(iterations), ctypes.c_void_p),
    )
    end, launches = time.monotonic() + seconds, 0
    t0 = time.monotonic()
    while time.monotonic() < end:
        check("cuLaunchKernel", cuda.cuLaunchKernel(function, 264, 1, 1, 256, 1, 1, 0, None, params, None))
        check("cuCtxSynchronize", cuda.cuCtxSynchronize())
        launches += 1
        if launches == 1:
            print(f"first kernel: {time.monotonic() - t0:.3f} s", flush=True)
    print(f"spun {launches} kernels in {time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
