"""Collectors: one file per source, each a prometheus_client custom collector."""
