"""Look up samples in collector output or exposition text by name and a subset of labels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Samples:
    samples: list[tuple[str, dict[str, str], float]]

    def all(self, name: str, labels: dict[str, str] | None = None) -> list[tuple[dict[str, str], float]]:
        wanted = labels or {}
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in wanted.items())
        ]

    def one(self, name: str, labels: dict[str, str] | None = None) -> tuple[dict[str, str], float]:
        found = self.all(name, labels)
        assert len(found) == 1, f"{name}{labels or {}}: expected one sample, found {found}"
        return found[0]

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.one(name, labels)[1]

    def labels(self, name: str, labels: dict[str, str] | None = None) -> dict[str, str]:
        """The labels of the one matching sample, without those used to find it."""
        found = self.one(name, labels)[0]
        return {k: v for k, v in found.items() if k not in (labels or {})}

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def samples_of(families: Iterable[Metric]) -> Samples:
    return Samples([(s.name, dict(s.labels), s.value) for family in families for s in family.samples])


def parse_text(text: str) -> Samples:
    return samples_of(text_string_to_metric_families(text))
