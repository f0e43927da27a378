"""HTML pages of runs: the report of one run, and the comparison of several (docs: loadgen/README.md)."""
