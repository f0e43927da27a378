/* A stand-in libnvidia-ml.so.1 for measuring the exporter's own CPU on a machine without a GPU.

   It answers the NVML calls the exporter (and pynvml's loader) make with constant, plausible H100 readings
   at once, so what a process spends around them is the Python side: pynvml's ctypes marshalling and the
   exporter's code. It says nothing about the driver's own cost (measured on an H100 in
   shared/reference/gpu_exporters.md 5.3); nvmlDeviceGetPcieThroughput sleeps its documented 20 ms window
   (wall time, no CPU), as the driver does. Constructed, not a recording of a real driver.

   Build: gcc -O2 -shared -fPIC -o libnvidia-ml.so.1 bench/nvml_stub.c
   Use:   LD_LIBRARY_PATH=<its folder> python -m exporter ...   (pynvml loads "libnvidia-ml.so.1")
   STUB_NVML_GPUS=N (default 1) GPUs; STUB_NVML_PIDS="pid,pid" compute processes on every GPU (1 GiB each).
   Calls it does not know are absent, as in an old driver (pynvml raises FunctionNotFound). */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
enum { OK = 0, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6, INSUFFICIENT_SIZE = 7, TIMEOUT = 10 };

#define MAX_GPUS 16
#define MAX_PIDS 32
typedef struct { int index; } device_t;
static device_t devices[MAX_GPUS];
static unsigned pids[MAX_PIDS];
static unsigned pid_count;

static unsigned gpu_count(void) {
    const char *text = getenv("STUB_NVML_GPUS");
    int n = text ? atoi(text) : 1;
    return n < 0 ? 0 : (n > MAX_GPUS ? MAX_GPUS : (unsigned)n);
}

static int index_of(void *handle) {
    for (unsigned i = 0; i < MAX_GPUS; i++)
        if (handle == &devices[i]) return (int)i;
    return -1;
}

#define DEVICE(handle)                       \
    int gpu = index_of(handle);              \
    if (gpu < 0) return INVALID_ARGUMENT;    \
    (void)gpu;

nvmlReturn_t nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    for (unsigned i = 0; i < MAX_GPUS; i++) devices[i].index = (int)i;
    pid_count = 0;
    const char *text = getenv("STUB_NVML_PIDS");
    while (text && *text && pid_count < MAX_PIDS) {
        pids[pid_count++] = (unsigned)strtoul(text, (char **)&text, 10);
        if (*text == ',') text++;
        else break;
    }
    return OK;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { return OK; }
const char *nvmlErrorString(nvmlReturn_t result) { (void)result; return "stub error"; }

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    snprintf(version, length, "580.159.04");
    return OK;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) { *version = 13000; return OK; }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) { *version = 13000; return OK; }
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned length) {
    snprintf(version, length, "13.580.159.04");
    return OK;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) { *count = gpu_count(); return OK; }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, void **handle) {
    if (index >= gpu_count()) return INVALID_ARGUMENT;
    *handle = &devices[index];
    return OK;
}
nvmlReturn_t nvmlDeviceGetUUID(void *handle, char *uuid, unsigned length) {
    DEVICE(handle);
    snprintf(uuid, length, "GPU-5ec0b5e8-0000-4000-8000-%012d", gpu);
    return OK;
}
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **handle) {
    for (unsigned i = 0; i < gpu_count(); i++) {
        char mine[96];
        nvmlDeviceGetUUID(&devices[i], mine, sizeof mine);
        if (strcmp(mine, uuid) == 0) { *handle = &devices[i]; return OK; }
    }
    return NOT_FOUND;
}
nvmlReturn_t nvmlDeviceGetIndex(void *handle, unsigned *index) { DEVICE(handle); *index = (unsigned)gpu; return OK; }
nvmlReturn_t nvmlDeviceGetName(void *handle, char *name, unsigned length) {
    DEVICE(handle);
    snprintf(name, length, "NVIDIA H100 80GB HBM3");
    return OK;
}

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_info_t;
nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *handle, pci_info_t *info) {
    DEVICE(handle);
    memset(info, 0, sizeof *info);
    info->bus = 0x18 + (unsigned)gpu;
    snprintf(info->busId, sizeof info->busId, "00000000:%02X:00.0", info->bus);
    snprintf(info->busIdLegacy, sizeof info->busIdLegacy, "0000:%02X:00.0", info->bus);
    return OK;
}
nvmlReturn_t nvmlDeviceGetMigMode(void *handle, unsigned *current, unsigned *pending) {
    DEVICE(handle);
    *current = *pending = 0;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *handle, unsigned *count) { DEVICE(handle); *count = 7; return OK; }
nvmlReturn_t nvmlDeviceGetNumFans(void *handle, unsigned *fans) { (void)handle; (void)fans; return NOT_SUPPORTED; }
nvmlReturn_t nvmlDeviceGetFanSpeed_v2(void *handle, unsigned fan, unsigned *speed) {
    (void)handle; (void)fan; (void)speed;
    return NOT_SUPPORTED;
}
nvmlReturn_t nvmlDeviceGetFanSpeed(void *handle, unsigned *speed) { (void)handle; (void)speed; return NOT_SUPPORTED; }
nvmlReturn_t nvmlDeviceGetMaxClockInfo(void *handle, int kind, unsigned *mhz) {
    DEVICE(handle);
    *mhz = kind == 2 ? 2619 : 1980;
    return OK;
}
nvmlReturn_t nvmlDeviceGetClockInfo(void *handle, int kind, unsigned *mhz) {
    DEVICE(handle);
    *mhz = kind == 2 ? 2619 : 1485;
    return OK;
}
nvmlReturn_t nvmlDeviceGetNvLinkState(void *handle, unsigned link, int *active) {
    (void)handle; (void)link; (void)active;
    return NOT_SUPPORTED;
}

typedef struct { unsigned gpu, memory; } utilization_t;
nvmlReturn_t nvmlDeviceGetUtilizationRates(void *handle, utilization_t *u) {
    DEVICE(handle);
    u->gpu = 99; u->memory = 32;
    return OK;
}
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } memory_v2_t;
typedef struct { unsigned long long total, free, used; } memory_t;
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *handle, memory_v2_t *m) {
    DEVICE(handle);
    m->total = 85520809984ULL; m->reserved = 503316480ULL; m->used = 1194131456ULL;
    m->free = m->total - m->reserved - m->used;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(void *handle, memory_t *m) {
    DEVICE(handle);
    m->total = 85520809984ULL; m->used = 1697447936ULL; m->free = m->total - m->used;
    return OK;
}
nvmlReturn_t nvmlDeviceGetPowerUsage(void *handle, unsigned *mw) { DEVICE(handle); *mw = 690000; return OK; }
nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(void *handle, unsigned *mw) { DEVICE(handle); *mw = 700000; return OK; }
nvmlReturn_t nvmlDeviceGetPowerManagementLimit(void *handle, unsigned *mw) { DEVICE(handle); *mw = 700000; return OK; }
nvmlReturn_t nvmlDeviceGetTemperature(void *handle, int sensor, unsigned *celsius) {
    DEVICE(handle);
    (void)sensor;
    *celsius = 61;
    return OK;
}
nvmlReturn_t nvmlDeviceGetPerformanceState(void *handle, int *state) { DEVICE(handle); *state = 0; return OK; }
nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(void *handle, unsigned *gen) { DEVICE(handle); *gen = 5; return OK; }
nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(void *handle, unsigned *width) { DEVICE(handle); *width = 16; return OK; }
nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *handle, unsigned long long *reasons) {
    DEVICE(handle);
    *reasons = 0x4;
    return OK;
}
nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *handle, int type, int counter, unsigned long long *count) {
    DEVICE(handle);
    *count = type == 0 ? (counter == 0 ? 1 : 5) : 0;
    return OK;
}
nvmlReturn_t nvmlDeviceGetRemappedRows(void *handle, unsigned *corr, unsigned *unc, unsigned *pending,
                                       unsigned *failure) {
    DEVICE(handle);
    *corr = 2; *unc = 0; *pending = 0; *failure = 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *handle, unsigned long long *mj) {
    DEVICE(handle);
    *mj = 123456789ULL + (unsigned long long)time(NULL) * 690ULL;
    return OK;
}
nvmlReturn_t nvmlDeviceGetPcieReplayCounter(void *handle, unsigned *count) { DEVICE(handle); *count = 3; return OK; }
nvmlReturn_t nvmlDeviceGetPcieThroughput(void *handle, int counter, unsigned *kbps) {
    DEVICE(handle);
    struct timespec window = {0, 20 * 1000 * 1000};  /* the driver's 20 ms sampling window */
    nanosleep(&window, NULL);
    *kbps = counter == 0 ? 1000 : 2000;
    return OK;
}
nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(void *handle, unsigned link, int counter, unsigned long long *v) {
    (void)handle; (void)link; (void)counter; (void)v;
    return NOT_SUPPORTED;
}

typedef struct {
    unsigned fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned valueType, nvmlReturn;
    union { double d; unsigned ui; unsigned long long ull; } value;
} field_value_t;
static int field(unsigned id, unsigned long long *out) {
    switch (id) {
    case 3: *out = 1; return 1;                               /* ECC SBE volatile (corrected) */
    case 4: *out = 0; return 1;                               /* ECC DBE volatile (uncorrected) */
    case 5: *out = 5; return 1;                               /* ECC SBE aggregate */
    case 6: *out = 0; return 1;                               /* ECC DBE aggregate */
    case 82: *out = 70; return 1;                             /* memory temperature */
    case 74: *out = 2500000000ULL; return 1;                  /* clock-event durations, ns */
    case 76: case 269: case 271: *out = 0; return 1;
    case 270: *out = 1000000ULL; return 1;
    case 142: *out = 2; return 1;                             /* remapped rows: correctable */
    case 143: case 144: case 145: *out = 0; return 1;         /* uncorrectable, pending, failure */
    case 185: case 186: *out = 690000; return 1;              /* power average / instant, mW */
    case 230: *out = 0; return 1;                             /* recovery action */
    default: return 0;
    }
}
nvmlReturn_t nvmlDeviceGetFieldValues(void *handle, int count, field_value_t *values) {
    DEVICE(handle);
    for (int i = 0; i < count; i++) {
        unsigned long long number;
        values[i].timestamp = (long long)time(NULL) * 1000000LL;
        values[i].latencyUsec = 0;
        if (field(values[i].fieldId, &number)) {
            values[i].nvmlReturn = OK;
            values[i].valueType = 3; /* unsigned long long */
            values[i].value.ull = number;
        } else {
            values[i].nvmlReturn = NOT_SUPPORTED;
        }
    }
    return OK;
}

typedef struct { unsigned pid; unsigned long long usedGpuMemory; unsigned gpuInstanceId, computeInstanceId; } process_t;
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *handle, unsigned *count, process_t *out) {
    DEVICE(handle);
    if (pid_count == 0) { *count = 0; return OK; }
    if (out == NULL || *count < pid_count) { *count = pid_count; return INSUFFICIENT_SIZE; }
    for (unsigned i = 0; i < pid_count; i++) {
        out[i].pid = pids[i];
        out[i].usedGpuMemory = 1ULL << 30;
        out[i].gpuInstanceId = out[i].computeInstanceId = 0xFFFFFFFFu;
    }
    *count = pid_count;
    return OK;
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(void *handle, unsigned *count, process_t *out) {
    DEVICE(handle);
    (void)out;
    *count = 0;
    return OK;
}
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(void *handle, unsigned *is_mig) { DEVICE(handle); *is_mig = 0; return OK; }
nvmlReturn_t nvmlDeviceGetEncoderUtilization(void *handle, unsigned *percent, unsigned *period_us) {
    DEVICE(handle);
    *percent = 0; *period_us = 167000;
    return OK;
}
nvmlReturn_t nvmlDeviceGetDecoderUtilization(void *handle, unsigned *percent, unsigned *period_us) {
    DEVICE(handle);
    *percent = 0; *period_us = 167000;
    return OK;
}
typedef struct { unsigned pid; unsigned long long timeStamp; unsigned smUtil, memUtil, encUtil, decUtil; } util_sample_t;
nvmlReturn_t nvmlDeviceGetProcessUtilization(void *handle, util_sample_t *out, unsigned *count,
                                             unsigned long long since) {
    DEVICE(handle);
    (void)since;
    if (pid_count == 0) return NOT_FOUND;
    if (out == NULL || *count < pid_count) { *count = pid_count; return INSUFFICIENT_SIZE; }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (unsigned i = 0; i < pid_count; i++) {
        out[i].pid = pids[i];
        out[i].timeStamp = (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000;
        out[i].smUtil = 90; out[i].memUtil = 30; out[i].encUtil = out[i].decUtil = 0;
    }
    *count = pid_count;
    return OK;
}

/* GPM (Hopper): samples are opaque buffers; metrics are constants. */
typedef struct { unsigned version, isSupportedDevice; } gpm_support_t;
nvmlReturn_t nvmlGpmQueryDeviceSupport(void *handle, gpm_support_t *support) {
    DEVICE(handle);
    support->isSupportedDevice = 1;
    return OK;
}
nvmlReturn_t nvmlGpmSampleAlloc(void **sample) { *sample = calloc(1, 64); return *sample ? OK : INSUFFICIENT_SIZE; }
nvmlReturn_t nvmlGpmSampleFree(void *sample) { free(sample); return OK; }
nvmlReturn_t nvmlGpmSampleGet(void *handle, void *sample) { DEVICE(handle); (void)sample; return OK; }
nvmlReturn_t nvmlGpmMigSampleGet(void *handle, unsigned gi, void *sample) {
    DEVICE(handle);
    (void)gi; (void)sample;
    return OK;
}
typedef struct { unsigned metricId, nvmlReturn; double value; char info[24]; } gpm_metric_t;
typedef struct { unsigned version, numMetrics; void *sample1, *sample2; gpm_metric_t metrics[477]; } gpm_get_t;
nvmlReturn_t nvmlGpmMetricsGet(gpm_get_t *request) {
    for (unsigned i = 0; i < request->numMetrics && i < 477; i++) {
        request->metrics[i].nvmlReturn = OK;
        request->metrics[i].value = 50.0;
    }
    return OK;
}

/* Xid events: none ever come; a wait lasts its timeout, as on a healthy GPU. */
nvmlReturn_t nvmlEventSetCreate(void **set) { static int token; *set = &token; return OK; }
nvmlReturn_t nvmlEventSetFree(void *set) { (void)set; return OK; }
nvmlReturn_t nvmlDeviceRegisterEvents(void *handle, unsigned long long types, void *set) {
    DEVICE(handle);
    (void)types; (void)set;
    return OK;
}
nvmlReturn_t nvmlDeviceGetSupportedEventTypes(void *handle, unsigned long long *types) {
    DEVICE(handle);
    *types = 0xff9f;
    return OK;
}
nvmlReturn_t nvmlEventSetWait_v2(void *set, void *data, unsigned timeout_ms) {
    (void)set; (void)data;
    struct timespec wait = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    nanosleep(&wait, NULL);
    return TIMEOUT;
}
