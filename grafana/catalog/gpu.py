"""GPU detail: everything NVML says about the GPUs, and the host around them."""

from __future__ import annotations

from grafana import variables as var
from grafana.model import (
    GREEN,
    RATIO_HIGH_BAD,
    Dashboard,
    q,
    row,
    stat,
    table,
    thresholds,
    timeline,
    timeseries,
)
from grafana.promql import GPU, HOST, RATE, rate


def gpu_detail() -> Dashboard:
    G = GPU
    legend = "{{instance}} GPU {{gpu}}"
    panels = [
        row("GPUs"),
        table("GPU inventory", "gpu_info: one row per GPU.", q(f"gpu_info{{{G}}}"), width=24, height=5),
        stat(
            "NVML available", "1 when the exporter initialised NVML.", q(f"min(gpu_nvml_available{{{HOST}}})")
        ),
        stat("GPUs answering", "GPUs whose NVML reads succeed (gpu_up).", q(f"sum(gpu_up{{{G}}})")),
        stat(
            "Mean utilization",
            "Mean GPU utilization.",
            q(f"avg(gpu_utilization_ratio{{{G}}})"),
            "percentunit",
        ),
        stat("Power", "Total power draw.", q(f"sum(gpu_power_usage_watts{{{G}}})"), "watt"),
        stat(
            "Hottest GPU",
            "Highest core temperature.",
            q(f"max(gpu_temperature_celsius{{{G}}})"),
            "celsius",
            thresholds=thresholds(GREEN, (80, "orange"), (90, "red")),
        ),
        stat(
            "Fullest VRAM",
            "Highest memory use ratio.",
            q(f"max(gpu_memory_used_bytes{{{G}}} / (gpu_memory_total_bytes{{{G}}} > 0))"),
            "percentunit",
            thresholds=RATIO_HIGH_BAD,
        ),
        row("Utilization"),
        timeseries(
            "Utilization",
            "GPU and memory-controller utilization (NVML: share of time a kernel ran).",
            [
                q(f"gpu_utilization_ratio{{{G}}}", f"{legend} gpu"),
                q(f"gpu_memory_bandwidth_utilization_ratio{{{G}}}", f"{legend} memory"),
            ],
            "percentunit",
            min=0,
            max=1,
        ),
        timeseries(
            "GPM activity (Hopper+)",
            "SM active, SM occupancy, tensor-core active and DRAM bandwidth "
            "from GPM: how busy the GPU really is, unlike NVML utilization.",
            [
                q(f"gpu_sm_active_ratio{{{G}}}", f"{legend} SM active"),
                q(f"gpu_sm_occupancy_ratio{{{G}}}", f"{legend} SM occupancy"),
                q(f"gpu_tensor_active_ratio{{{G}}}", f"{legend} tensor active"),
                q(f"gpu_dram_bandwidth_utilization_ratio{{{G}}}", f"{legend} DRAM bandwidth"),
            ],
            "percentunit",
            min=0,
            max=1,
        ),
        row("Memory"),
        timeseries(
            "VRAM",
            "Used, reserved and total GPU memory.",
            [
                q(f"gpu_memory_used_bytes{{{G}}}", f"{legend} used"),
                q(f"gpu_memory_reserved_bytes{{{G}}}", f"{legend} reserved"),
                q(f"gpu_memory_total_bytes{{{G}}}", f"{legend} total"),
            ],
            "bytes",
        ),
        timeseries(
            "VRAM by process",
            "Memory of each compute process (capped list).",
            [
                q(f"gpu_process_memory_used_bytes{{{G}}}", "GPU {{gpu}} {{process}} ({{pid}})"),
            ],
            "bytes",
        ),
        timeseries(
            "SM utilization by process",
            "Share of SM time per process (sampled).",
            [
                q(f"gpu_process_sm_utilization_ratio{{{G}}}", "GPU {{gpu}} {{process}} ({{pid}})"),
            ],
            "percentunit",
        ),
        timeseries(
            "VRAM by engine",
            "Memory the engines' process trees hold on each GPU.",
            [
                q(f"llm_engine_gpu_memory_used_bytes{{{G}}}", "{{target}} on GPU {{gpu}}"),
            ],
            "bytes",
        ),
        row("Power and thermal"),
        timeseries(
            "Power",
            "Draw, enforced limit, and mean power from the energy counter (5-minute rate).",
            [
                q(f"gpu_power_usage_watts{{{G}}}", f"{legend} draw"),
                q(f"gpu_power_limit_watts{{{G}}}", f"{legend} limit"),
                q(f"instance_gpu:gpu_energy_joules:rate5m{{{G}}}", f"{legend} mean (energy counter)"),
            ],
            "watt",
        ),
        timeseries(
            "Temperature",
            "GPU core and memory (HBM) temperature.",
            [
                q(f"gpu_temperature_celsius{{{G}}}", f"{legend} core"),
                q(f"gpu_memory_temperature_celsius{{{G}}}", f"{legend} memory"),
            ],
            "celsius",
        ),
        timeseries(
            "Clocks",
            "Current clocks against their maximum.",
            [
                q(f"gpu_clock_hertz{{{G}}}", f"{legend} {{{{clock}}}}"),
                q(f'gpu_clock_max_hertz{{{G}, clock="sm"}}', f"{legend} sm max"),
            ],
            "hertz",
        ),
        timeseries(
            "Fans and performance state",
            "Fan speed (where the board has fans) and P-state (0 = fastest).",
            [
                q(f"gpu_fan_speed_ratio{{{G}}} * 100", f"{legend} fan {{{{fan}}}} %"),
                q(f"gpu_performance_state{{{G}}}", f"{legend} P-state"),
            ],
            "short",
        ),
        timeline(
            "Clock events",
            "Why the clocks are held back right now (NVML clock event reasons).",
            [
                q(
                    f"max by (instance, gpu, reason) (gpu_clock_event_reason_active{{{G}}})",
                    "GPU {{gpu}} {{reason}}",
                ),
            ],
            width=24,
            height=8,
        ),
        timeseries(
            "Time in clock events",
            "Share of time spent in each clock event (from NVML's counters).",
            [
                q(
                    rate("gpu_clock_event_duration_seconds_total", G, "instance, gpu, reason"),
                    "GPU {{gpu}} {{reason}}",
                ),
            ],
            "percentunit",
            width=24,
        ),
        row("Interconnect"),
        timeseries(
            "PCIe throughput",
            "Host to GPU and back (sampled over 20 ms windows).",
            [
                q(f"gpu_pcie_transmit_bytes_per_second{{{G}}}", f"{legend} tx"),
                q(f"gpu_pcie_receive_bytes_per_second{{{G}}}", f"{legend} rx"),
            ],
            "Bps",
            width=8,
        ),
        timeseries(
            "PCIe link and replays",
            "Link generation and width (a degraded link shows here) and replays.",
            [
                q(f"gpu_pcie_link_generation{{{G}}}", f"{legend} gen"),
                q(f"gpu_pcie_link_width{{{G}}}", f"{legend} width"),
                q(rate("gpu_pcie_replays_total", G, "instance, gpu"), f"{legend} replays/s"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "NVLink",
            "NVLink throughput and errors per link.",
            [
                q(rate("gpu_nvlink_transmit_bytes_total", G, "instance, gpu"), f"{legend} tx"),
                q(rate("gpu_nvlink_receive_bytes_total", G, "instance, gpu"), f"{legend} rx"),
                q(
                    rate("gpu_nvlink_errors_total", G, "instance, gpu, type"),
                    f"{legend} {{{{type}}}} errors/s",
                ),
            ],
            "Bps",
            width=8,
        ),
        row("Reliability"),
        timeseries(
            "Xid errors",
            "Driver-reported Xid events in each interval.",
            [
                q(
                    f"sum by (instance, gpu, xid) (increase(gpu_xid_errors_total{{{G}}}[{RATE}]))",
                    "GPU {{gpu}} Xid {{xid}}",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "ECC errors",
            "New ECC errors per interval (volatile counters).",
            [
                q(
                    f"sum by (instance, gpu, severity) "
                    f'(increase(gpu_ecc_errors_total{{{G}, scope="volatile"}}[{RATE}]))',
                    "GPU {{gpu}} {{severity}}",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Row remapping and recovery",
            "Remapped rows, pending/failed remaps (0/1) and the NVML recovery "
            "action (0 none, 1 reset, 2 reboot, 3 drain P2P, 4 drain and reset).",
            [
                q(f"gpu_remapped_rows_total{{{G}}}", "GPU {{gpu}} remapped {{cause}}"),
                q(f"gpu_remapped_rows_pending{{{G}}}", "GPU {{gpu}} pending"),
                q(f"gpu_remapped_rows_failed{{{G}}}", "GPU {{gpu}} failed"),
                q(f"gpu_recovery_action{{{G}}}", "GPU {{gpu}} recovery action"),
            ],
            "short",
            width=8,
        ),
        row("Exporter and host"),
        timeseries(
            "Sampler age",
            "Seconds since the background sampler last read each slow NVML source.",
            [
                q(f"time() - gpu_sample_timestamp_seconds{{{G}}}", "GPU {{gpu}} {{source}}"),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "NVML errors",
            "Labelled NVML call failures per second.",
            [
                q(rate("gpu_nvml_errors_total", G, "gpu, call, error"), "GPU {{gpu}} {{call}}: {{error}}"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Collectors",
            "Duration of each exporter collector and its errors per second.",
            [
                q(f"exporter_collector_duration_seconds{{{HOST}}}", "{{collector}} duration"),
                q(
                    rate("exporter_collector_errors_total", HOST, "collector, kind"),
                    "{{collector}} {{kind}} errors/s",
                ),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "Host CPU and load",
            "CPU utilization of all cores and the load average per core.",
            [
                q(f"host_cpu_utilization_ratio{{{HOST}}}", "{{instance}} CPU"),
                q(
                    f"host_load_average{{{HOST}}} / on (instance) group_left host_cpu_cores{{{HOST}}}",
                    "{{instance}} load {{period}} per core",
                ),
            ],
            "percentunit",
            width=8,
        ),
        timeseries(
            "Host memory",
            "Used and available memory, and swap in use.",
            [
                q(f"host_memory_used_bytes{{{HOST}}}", "{{instance}} used"),
                q(f"host_memory_available_bytes{{{HOST}}}", "{{instance}} available"),
                q(f"host_memory_total_bytes{{{HOST}}}", "{{instance}} total"),
                q(f"host_swap_used_bytes{{{HOST}}}", "{{instance}} swap used"),
                q(f"host_swap_total_bytes{{{HOST}}}", "{{instance}} swap total"),
            ],
            "bytes",
            width=8,
        ),
        timeseries(
            "Host network and disk",
            "Bytes per second by interface and device, and network errors.",
            [
                q(rate("host_network_receive_bytes_total", HOST, "instance, interface"), "{{interface}} rx"),
                q(rate("host_network_transmit_bytes_total", HOST, "instance, interface"), "{{interface}} tx"),
                q(rate("host_disk_read_bytes_total", HOST, "instance, device"), "{{device}} read"),
                q(rate("host_disk_written_bytes_total", HOST, "instance, device"), "{{device}} written"),
                q(
                    rate("host_network_receive_errors_total", HOST, "instance, interface"),
                    "{{interface}} rx errors",
                ),
                q(
                    rate("host_network_transmit_errors_total", HOST, "instance, interface"),
                    "{{interface}} tx errors",
                ),
            ],
            "Bps",
            width=8,
        ),
        timeseries(
            "Per-core CPU",
            "Utilization of each logical core.",
            [
                q(f"host_cpu_core_utilization_ratio{{{HOST}}}", "{{instance}} cpu {{cpu}}"),
            ],
            "percentunit",
            width=24,
        ),
    ]
    return Dashboard(
        "gpu",
        "llmobs-gpu",
        "LLM serving: GPU detail",
        "Everything NVML says about the GPUs, and the host around them.",
        (var.HOST, var.GPU),
        tuple(panels),
    )
