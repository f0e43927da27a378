#!/usr/bin/env bash
# Issue 16 on a GPU host: our exporter's total CPU beside nvitop-exporter's, at Prometheus's 15 s interval and
# at 1 s, for 10 minutes, in one run; plus what each NVML call costs there and a 0.2 s latency run.
#
#   tools/gpu-exporter-cpu.sh run       # all of it in the foreground (about 13 minutes)
#   tools/gpu-exporter-cpu.sh start     # installs and checks, then the same in a session of its own (setsid)
#   tools/gpu-exporter-cpu.sh status    # how far a started run is
#   tools/gpu-exporter-cpu.sh collect   # waits (up to COLLECT_WAIT, 570 s) for a started run, copies it to $OUT
#
# On the device machine (no network, at most 10 minutes a command, given back 30 s after one ends), carry
# .devcarry and .whl and send these two commands one right after the other:
#   bash tools/gpu-exporter-cpu.sh start && sleep 540 && bash tools/gpu-exporter-cpu.sh status
#   bash tools/gpu-exporter-cpu.sh collect
#
# Results go to $WORK (default /tmp/gpu-exporter-cpu; it outlives one device command) and, with collect, to
# $OUT (default out/gpu-exporter-cpu): results.md (everything printed), window.json, latency.json, run.log,
# exporter-logs.tgz (each exporter process's own log).
#
# The four 10-minute lanes (ours and nvitop-exporter, each scraped every 15 s and every 1 s) run at the same
# time, so the whole comparison fits one device lease: each exporter is its own process on a host of 16
# cores, CPU is counted per process (user + system from /proc, so waiting does not count), and both
# exporters of an interval share whatever the other two add (the same GPU, the same driver, the same
# moments), so the comparison at each interval stays like for like.
#
# Packages: the wheels in .devcarry/wheels (the project's runtime dependencies, Python 3.12 manylinux) and
# .whl (nvitop_exporter-1.7.2, nvitop-1.7.2), whichever are there, installed into $WORK/site with
# `pip --no-index --no-deps` and put first on PYTHONPATH; `start` checks every import before it starts.
# Without NVML (no driver) both exporters degrade and the results say so: ours serves gpu_nvml_available 0,
# nvitop-exporter exits at start ("did not run").
#
# Settings (environment): WINDOW (600 s), LATENCY_SCRAPES (200), WARMUP (1 scrape per lane before the
# measured ones, reported apart: the first scrape after an exporter starts is its coldest, for both
# exporters), NVML_STUB=N (no GPU: bench/nvml_stub.c with N GPUs stands in for the driver, built with gcc:
# for trying the script on a CPU machine), PYTHON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=${WORK:-/tmp/gpu-exporter-cpu}
out=${OUT:-$root/out/gpu-exporter-cpu}
window=${WINDOW:-600}
latency_scrapes=${LATENCY_SCRAPES:-200}
warmup=${WARMUP:-1}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

prepare() {
  mkdir -p "$work"
  local wheels=() dir
  for dir in "$root/.devcarry/wheels" "$root/.whl"; do
    if compgen -G "$dir/*.whl" >/dev/null; then wheels+=("$dir"/*.whl); fi
  done
  if ((${#wheels[@]})) && [[ -z ${GPU_EXPORTER_CPU_INSTALLED:-} ]]; then  # start installed them already
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --root-user-action=ignore --target "$work/site" "${wheels[@]}"
  fi
  export PYTHONPATH="$work/site:$root${PYTHONPATH:+:$PYTHONPATH}"
  nvitop_cmd=""
  if $python -c "import nvitop_exporter" 2>/dev/null; then nvitop_cmd="$python -m nvitop_exporter"; fi
  stub_args=() stub_env=()
  if [[ -n ${NVML_STUB:-} ]]; then
    stub_args=(--nvml-stub "$NVML_STUB")
    mapfile -t stub_env < <($python -c "import sys; sys.path.insert(0, 'bench')
from exporter_procs import nvml_stub_env
print(*(f'{k}={v}' for k, v in nvml_stub_env($NVML_STUB).items()), sep='\n')")
  fi
}

check() {
  # Every module the runs import (the exporter's, the benchmark's, pynvml), so a missing wheel fails here,
  # in the first command's output, not ten minutes later in the log.
  $python -c "import exporter.__main__, exporter.collectors.gpu, exporter.collectors.host
import exporter.engines.collector, psutil, prometheus_client.parser, pynvml
import sys; sys.path.insert(0, 'bench'); import exporter_scrape, nvml_costs
print('imports ok:', sys.version.split()[0])"
  [[ -n $nvitop_cmd ]] || echo "WARNING: nvitop-exporter is not importable (no .whl/ wheels?): its lanes will not run"
}

run() {
  prepare
  local results="$work/results.md"
  : >"$results"
  say() { echo "$@" | tee -a "$results"; }
  say "# Exporter CPU beside nvitop-exporter (tools/gpu-exporter-cpu.sh), $(date -u +%Y-%m-%dT%H:%MZ)"
  say "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown); $($python --version 2>&1); $(nproc) cores"
  if command -v nvidia-smi >/dev/null; then
    say "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | paste -sd';' -)"
  else
    say "nvidia-smi: not on this machine"
  fi
  local nvml
  nvml=$(env "${stub_env[@]}" $python -c "import pynvml; pynvml.nvmlInit(); print(f'NVML available, {pynvml.nvmlDeviceGetCount()} GPU(s)')" 2>&1 | tail -1) || true
  say "NVML: $nvml${NVML_STUB:+ (bench/nvml_stub.c, a stand-in: no driver cost in any figure)}"
  if [[ $nvml != NVML\ available* ]]; then
    say "WARNING: no NVML here: both exporters degrade (ours: gpu_nvml_available 0; nvitop-exporter exits at start)."
    say "The figures below then say nothing about the GPU side."
  fi
  say "nvitop-exporter: ${nvitop_cmd:-not installed (no .whl/ wheels and not importable): its lanes do not run}"
  local peer=(--skip-nvitop)
  [[ -n $nvitop_cmd ]] && peer=(--nvitop-exporter "$nvitop_cmd")

  say ""
  say "## What each NVML call costs here (bench/nvml_costs.py)"
  env "${stub_env[@]}" $python bench/nvml_costs.py 2>&1 | tee -a "$results"

  say ""
  say "## $window s at 15 s and at 1 s, side by side (bench/exporter_scrape.py --window $window)"
  $python bench/exporter_scrape.py --window "$window" --interval 15 --interval 1 --idle-seconds 20 \
    --warmup "$warmup" "${peer[@]}" "${stub_args[@]}" --json "$work/window.json" 2>&1 | tee -a "$results"

  say ""
  say "## Scrape latency, $latency_scrapes scrapes 0.2 s apart, Prometheus's kept connection (bench/exporter_scrape.py)"
  $python bench/exporter_scrape.py --scrapes "$latency_scrapes" --interval 0.2 --keep-alive --idle-seconds 10 \
    --warmup "$warmup" "${peer[@]}" "${stub_args[@]}" --json "$work/latency.json" 2>&1 | tee -a "$results"
  say ""
  say "done"
}

case ${1:-run} in
  run)
    run
    ;;
  start)
    if [[ -f $work/started && ! -f $work/finished ]] && pgrep -s "$(cat "$work/started")" >/dev/null 2>&1; then
      echo "a run is already going (session $(cat "$work/started")); 'tools/gpu-exporter-cpu.sh collect' gathers it"
      exit 1
    fi
    mkdir -p "$work"
    rm -f "$work"/results.md "$work"/*.json "$work"/run.log "$work"/finished
    prepare
    check
    export GPU_EXPORTER_CPU_INSTALLED=1
    setsid bash -c "'$0' run >'$work/run.log' 2>&1; echo \$? >'$work/finished'" </dev/null >/dev/null 2>&1 &
    echo $! >"$work/started"
    sleep 15  # the first lines (machine, NVML, nvitop-exporter) or an early failure
    cat "$work/run.log"
    echo
    echo "started in the background; log $work/run.log; 'tools/gpu-exporter-cpu.sh collect' gathers it"
    ;;
  status)
    if [[ -f $work/finished ]]; then echo "finished (status $(cat "$work/finished"))"; else echo "running"; fi
    tail -n 5 "$work/run.log" 2>/dev/null || true
    ;;
  collect)
    deadline=$((SECONDS + ${COLLECT_WAIT:-570}))
    while [[ ! -f $work/finished && $SECONDS -lt $deadline ]]; do sleep 5; done
    mkdir -p "$out"
    cp "$work"/results.md "$work"/*.json "$work"/run.log "$out"/ 2>/dev/null || true
    tar -czf "$out/exporter-logs.tgz" -C "$root/.cache" bench-logs 2>/dev/null || true  # each exporter's log
    if [[ -f $work/finished ]]; then
      echo "finished (status $(cat "$work/finished")); results in $out"
    else
      echo "NOT finished yet: run 'tools/gpu-exporter-cpu.sh collect' again"
    fi
    cat "$work/results.md" 2>/dev/null || tail -n 40 "$work/run.log"
    ;;
  *)
    echo "usage: $0 run|start|status|collect" >&2
    exit 2
    ;;
esac
