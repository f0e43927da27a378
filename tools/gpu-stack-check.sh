#!/usr/bin/env bash
# The whole stack on one GPU host: llama.cpp's llama-server built with CUDA serving a random-weight
# model shaped like Qwen3-4B, the exporter pointed at it, and the load generator stepping through
# concurrencies. Writes what it saw to $OUT (default ./out/gpu-stack):
#   exporter-idle.txt, exporter-load.txt  the exporter's /metrics before and during load
#   engine-load.txt                       llama-server's own /metrics during load
#   compute-apps.csv                      nvidia-smi --query-compute-apps at the same moment
#   loadgen.json, loadgen.txt             the load generator's report
#   queries.md                            when Prometheus is available (on the PATH, or PROMETHEUS=binary):
#                                         it scrapes the stack with prometheus/rules/ loaded, and every
#                                         dashboard, Grafana-alert and recording-rule query is run against
#                                         it (tools/check_queries.py), GPU panels and rules included
# and ends with the engine -> GPU join next to nvidia-smi's view of the same process.
# Needs: nvidia-smi, cmake and nvcc (or a built binary), Python with this project's dependencies.
# Without network, LLAMA_CPP_SOURCE=<llama.cpp tree> (see tools/build-llama-server.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out/gpu-stack}
mkdir -p "$out"
export LLAMA_BUILD_SUFFIX=-cuda
export LLAMA_EXTRA_CMAKE_ARGS=${LLAMA_EXTRA_CMAKE_ARGS:--DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90}
python=${PYTHON:-python3}
levels=${LEVELS:-1,16,64}
step=${STEP_DURATION:-20s}
shape=${SHAPE:-QWEN3_4B}   # or TINY: seconds to write instead of a minute for the 8.8 GB model
ctx=${CTX:-65536}
parallel=${PARALLEL:-64}

server=$(bash tools/build-llama-server.sh)
model=$($python -c "from tests.support.llama import $shape, random_model; print(random_model($shape))")
echo "llama-server: $server"
echo "model: $model ($(du -h "$model" | cut -f1))"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_http() {
  for _ in $(seq 1 240); do curl -fs "$1" >/dev/null && return 0; sleep 0.5; done
  echo "no answer from $1" >&2
  return 1
}

prometheus=${PROMETHEUS:-$(command -v prometheus || true)}
if [ -n "$prometheus" ]; then
  cat >"$out/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: ["$root/prometheus/rules/*.yml"]
scrape_configs:
  - {job_name: llmobs-exporter, static_configs: [{targets: ["127.0.0.1:9840"]}]}
  - {job_name: llmobs-loadgen, static_configs: [{targets: ["127.0.0.1:9841"]}]}
  - {job_name: engines, static_configs: [{targets: ["127.0.0.1:8080"], labels: {engine_kind: llamacpp}}]}
EOF
  "$prometheus" --config.file="$out/prometheus.yml" --storage.tsdb.path="$(mktemp -d)" \
    --web.listen-address=127.0.0.1:9090 >"$out/prometheus.log" 2>&1 &
  pids+=($!)
fi

"$server" -m "$model" --alias "$(basename "$model" .gguf)" -ngl 99 --metrics -np "$parallel" -c "$ctx" \
  --host 127.0.0.1 --port 8080 >"$out/llama-server.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:8080/health

$python -m exporter --listen-address 127.0.0.1:9840 --target llama=http://127.0.0.1:8080 \
  >"$out/exporter.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9840/readyz
curl -fs http://127.0.0.1:9840/metrics >"$out/exporter-idle.txt"

$python -m loadgen run --url http://127.0.0.1:8080 --concurrency "$levels" --step-duration "$step" \
  --input-len 128 --output-len 50 --extra-body '{"ignore_eos": true}' --name gpu-stack \
  --metrics-address 127.0.0.1:9841 --progress plain --output-json "$out/loadgen.json" \
  >"$out/loadgen.txt" 2>&1 &
loadgen=$!
pids+=($loadgen)

# Snapshot in the middle of the last step, where the engine is busiest.
steps=$(($(tr -cd ',' <<<"$levels" | wc -c) + 1))
seconds=${step%s}
sleep $((seconds * (steps - 1) + seconds / 2))
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits >"$out/compute-apps.csv"
curl -fs http://127.0.0.1:9840/metrics >"$out/exporter-load.txt"
curl -fs http://127.0.0.1:8080/metrics >"$out/engine-load.txt"
wait "$loadgen"
if [ -n "$prometheus" ]; then
  $python tools/check_queries.py http://127.0.0.1:9090 --out "$out/queries.md" >/dev/null || true
fi

echo "== loadgen report"
cat "$out/loadgen.txt"
echo "== nvidia-smi compute apps (pid, name, MiB)"
cat "$out/compute-apps.csv"
echo "== exporter during load: join, engine and GPU"
grep -E '^(llm_engine_gpu|llm_requests_(running|waiting)|llm_generation_tokens_total|gpu_process_memory_used_bytes|gpu_utilization_ratio|gpu_power_usage_watts|gpu_memory_used_bytes|host_engine_process_resident_memory_bytes)' \
  "$out/exporter-load.txt"
echo "== engine's own counters at the same moment"
grep -E '^llamacpp:(tokens_predicted_total|prompt_tokens_total|requests_processing)' "$out/engine-load.txt"
if [ -f "$out/queries.md" ]; then
  echo "== Prometheus: dashboard queries and recording rules (queries.md)"
  grep -E 'queries answered|^Problems|^Rules evaluating|^Alerts|PROBLEM|tokens_per_gpu_joule|gpu_memory_used_bytes_per_total' "$out/queries.md"
fi
