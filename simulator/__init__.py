"""An engine simulator faithful to vLLM (API and /metrics), for demos and tests without a GPU."""
