"""Normalized engine metrics: one adapter per engine."""
