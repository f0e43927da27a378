#!/usr/bin/env bash
# Issue 16 on a GPU host: our exporter's total CPU beside nvitop-exporter's, at Prometheus's 15 s interval and
# at 1 s, for 10 minutes each, in one run; plus what each NVML call costs there and a 0.2 s latency run.
#
#   tools/gpu-exporter-cpu.sh run       # all of it in the foreground (about 13 minutes)
#   tools/gpu-exporter-cpu.sh start     # the same in a session of its own (setsid), returns at once
#   tools/gpu-exporter-cpu.sh status    # how far a started run is
#   tools/gpu-exporter-cpu.sh collect   # waits (up to 9.5 min) for a started run, copies it to $OUT, prints it
#
# Results go to $WORK (default /tmp/gpu-exporter-cpu; it outlives one device command) and, with collect, to
# $OUT (default out/gpu-exporter-cpu): results.md (everything printed below), window.json, latency.json.
#
# The four 10-minute lanes (ours and nvitop-exporter, each scraped every 15 s and every 1 s) run at the same
# time, so the whole comparison fits one device lease: each exporter is its own process on a host of 16
# cores, CPU is counted per process (user + system from /proc, so waiting does not count), and both
# exporters of an interval share whatever the other two add (the same GPU, the same driver, the same
# moments), so the comparison at each interval stays like for like.
#
# Needs: python3 with the project's runtime packages (the GPU image has them: httpx, psutil,
# prometheus-client, pyyaml, nvidia-ml-py), and nvitop-exporter: carried as wheels in .whl/
# (nvitop_exporter-1.7.2, nvitop-1.7.2; their other needs are on the image), installed here with
# `pip --no-index --target`. Without NVML (no driver) both exporters degrade and the results say so:
# ours serves gpu_nvml_available 0, nvitop-exporter exits at start ("did not run").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=${WORK:-/tmp/gpu-exporter-cpu}
out=${OUT:-$root/out/gpu-exporter-cpu}
window=${WINDOW:-600}
python=${PYTHON:-python3}

prepare() {
  mkdir -p "$work"
  if ls "$root"/.whl/*.whl >/dev/null 2>&1; then
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$work/site" "$root"/.whl/*.whl
  fi
  export PYTHONPATH="$root:$work/site${PYTHONPATH:+:$PYTHONPATH}"
  if $python -c "import nvitop_exporter" 2>/dev/null; then
    nvitop_cmd="$python -m nvitop_exporter"
  else
    nvitop_cmd=""
  fi
}

run() {
  prepare
  local results="$work/results.md"
  : >"$results"
  say() { echo "$@" | tee -a "$results"; }
  say "# Exporter CPU beside nvitop-exporter (tools/gpu-exporter-cpu.sh), $(date -u +%Y-%m-%dT%H:%MZ)"
  say "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown); $($python --version 2>&1)"
  if command -v nvidia-smi >/dev/null; then
    say "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | paste -sd';' -)"
  else
    say "nvidia-smi: not on this machine"
  fi
  local nvml
  nvml=$($python -c "import pynvml; pynvml.nvmlInit(); print(f'NVML available, {pynvml.nvmlDeviceGetCount()} GPU(s)')" 2>&1 | tail -1) || true
  say "NVML: $nvml"
  if [[ $nvml != NVML\ available* ]]; then
    say "WARNING: no NVML here: both exporters degrade (ours: gpu_nvml_available 0; nvitop-exporter exits at start)."
    say "The figures below then say nothing about the GPU side."
  fi
  say "nvitop-exporter: ${nvitop_cmd:-not installed (no .whl/ wheels and not importable): its lanes do not run}"
  local peer=(--skip-nvitop)
  [[ -n $nvitop_cmd ]] && peer=(--nvitop-exporter "$nvitop_cmd")

  say ""
  say "## What each NVML call costs here (bench/nvml_costs.py)"
  $python bench/nvml_costs.py 2>&1 | tee -a "$results"

  say ""
  say "## 10 minutes at 15 s and at 1 s, side by side (bench/exporter_scrape.py --window $window)"
  $python bench/exporter_scrape.py --window "$window" --interval 15 --interval 1 --idle-seconds 20 \
    "${peer[@]}" --json "$work/window.json" 2>&1 | tee -a "$results"

  say ""
  say "## Scrape latency, 200 scrapes 0.2 s apart, Prometheus's kept connection (bench/exporter_scrape.py)"
  $python bench/exporter_scrape.py --scrapes 200 --interval 0.2 --keep-alive --idle-seconds 10 \
    "${peer[@]}" --json "$work/latency.json" 2>&1 | tee -a "$results"
  say ""
  say "done"
}

case ${1:-run} in
  run)
    run
    ;;
  start)
    mkdir -p "$work"
    rm -f "$work/results.md" "$work/finished"
    setsid bash -c "'$0' run >'$work/run.log' 2>&1; echo \$? >'$work/finished'" </dev/null >/dev/null 2>&1 &
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
