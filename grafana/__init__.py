"""Grafana dashboards written as code."""
