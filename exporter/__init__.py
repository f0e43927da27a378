"""LLM-serving observability exporter: GPU (NVML), host (psutil) and normalized engine metrics."""
