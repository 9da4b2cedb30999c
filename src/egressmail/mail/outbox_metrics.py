"""Prometheus metrics of the outbox and its workers.

Each :class:`OutboxMetrics` has its own registry (no global state, so tests and several workers in
one process do not collide). Queue depth is read from the outbox when Prometheus scrapes, so it is
right even when other processes change the queue; latency and outcomes are counted by the worker.

Names::

    egressmail_outbox_messages{state}                      gauge: messages in each state
    egressmail_outbox_oldest_due_age_seconds               gauge: how late the most overdue message is
    egressmail_outbox_attempts_total{outcome}              counter: accepted|transient|permanent|unknown
    egressmail_outbox_delivered_total                      counter: messages that reached "sent"
    egressmail_outbox_attempt_duration_seconds             histogram: one SMTP transaction
    egressmail_outbox_delivery_latency_seconds             histogram: queued → sent
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from egressmail.mail.outbox_model import Status
from egressmail.mail.retry import AttemptKind

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                    3600, 4 * 3600, 24 * 3600)


class _DepthCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[Status, int]],
                 oldest_due: Callable[[], float | None]) -> None:
        self._counts = counts
        self._oldest_due = oldest_due

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("egressmail_outbox_messages", "Messages in the outbox by state.",
                                  labels=["state"])
        for status, n in self._counts().items():
            depth.add_metric([status.value], n)
        yield depth
        oldest = self._oldest_due()
        lag = GaugeMetricFamily("egressmail_outbox_oldest_due_age_seconds",
                                "How long the most overdue message has been waiting for a worker.")
        lag.add_metric([], max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        yield lag


class OutboxMetrics:
    """The outbox's metrics in their own registry.

    Args:
        counts: returns messages per state (``Outbox.counts``); read at every scrape.
        oldest_due: returns the earliest due time of a waiting message, or ``None``.
    """

    def __init__(self, counts: Callable[[], Mapping[Status, int]] | None = None,
                 oldest_due: Callable[[], float | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter("egressmail_outbox_attempts", "Delivery attempts by outcome.",
                                ["outcome"], registry=self.registry)
        for kind in (AttemptKind.ACCEPTED, AttemptKind.TRANSIENT, AttemptKind.PERMANENT,
                     AttemptKind.UNKNOWN):
            self.attempts.labels(kind.value)
        self.delivered = Counter("egressmail_outbox_delivered", "Messages delivered (state sent).",
                                 registry=self.registry)
        self.attempt_duration = Histogram("egressmail_outbox_attempt_duration_seconds",
                                          "Duration of one SMTP transaction.",
                                          buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.latency = Histogram("egressmail_outbox_delivery_latency_seconds",
                                 "Time from enqueue to acceptance by the server.",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        if counts is not None:
            self.registry.register(_DepthCollector(counts, oldest_due or (lambda: None)))

    def observe_attempt(self, kind: AttemptKind, duration_s: float) -> None:
        """Count one attempt and its duration."""
        self.attempts.labels(kind.value).inc()
        self.attempt_duration.observe(max(duration_s, 0.0))

    def observe_delivered(self, queued_for_s: float) -> None:
        """Count one delivered message and how long it waited in the outbox."""
        self.delivered.inc()
        self.latency.observe(max(queued_for_s, 0.0))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
