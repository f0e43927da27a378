"""Xid errors from NVML events, counted by code in a thread of their own (the wait blocks)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter

import pynvml

from exporter.collectors.nvml_session import NVML_WIDE, UNSUPPORTED, NvmlSession, text

log = logging.getLogger("exporter.gpu")
WAIT_MS = 500


class XidWatcher:
    """Registers every GPU for Xid critical-error events and counts them by (gpu, uuid, xid).

    Counts live here, outside any NVML session, so they survive re-initialisation. Events raised before
    registration are not seen (an NVML property).
    """

    def __init__(self, session: NvmlSession) -> None:
        self.session = session
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.generation = 0  # the session generation the running thread was started for

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def ensure_running(self) -> None:
        """Start the watcher thread once per NVML session (again after a re-initialisation).

        A thread that ended within its session (nothing to watch, events unsupported) is not restarted
        before the next session, so GPUs without events cost nothing per sampler pass.
        """
        if self._thread is not None and self.generation == self.session.generation:
            return
        self.stop()
        self.generation = self.session.generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="nvml-xid", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT_MS / 1000 * 4)
            self._thread = None

    def _register(self) -> tuple[object, dict[str, tuple[str, str]]] | None:
        nvml = self.session.nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            log.info("Xid events unavailable: %s", exc)
            return None
        watched: dict[str, tuple[str, str]] = {}  # uuid -> (gpu, uuid)
        for device in self.session.devices:
            if device.is_mig:
                continue  # the parent's registration covers its instances
            try:
                nvml.nvmlDeviceRegisterEvents(device.handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
            except pynvml.NVMLError as exc:
                if exc.value not in UNSUPPORTED:
                    self.session.record_failure(device, "nvmlDeviceRegisterEvents", exc)
                continue
            watched[device.uuid] = device.labels
        if not watched:
            self._free(event_set)
            return None
        return event_set, watched

    def _run(self, stop: threading.Event) -> None:
        registration = self._register()
        if registration is None:
            return
        event_set, watched = registration
        nvml = self.session.nvml
        try:
            while not stop.is_set():
                try:
                    data = nvml.nvmlEventSetWait_v2(event_set, WAIT_MS)
                except pynvml.NVMLError as exc:
                    if exc.value == pynvml.NVML_ERROR_TIMEOUT:
                        continue
                    log.warning("waiting for Xid events failed: %s", exc)
                    if exc.value in NVML_WIDE:
                        return
                    stop.wait(1.0)  # do not spin on a persistent error
                    continue
                self._count(data, watched)
        finally:
            self._free(event_set)

    def _count(self, data: object, watched: dict[str, tuple[str, str]]) -> None:
        if not getattr(data, "eventType", 0) & pynvml.nvmlEventTypeXidCriticalError:
            return
        try:
            uuid = text(self.session.nvml.nvmlDeviceGetUUID(data.device))
        except pynvml.NVMLError:
            uuid = ""
        gpu, uuid = watched.get(uuid, ("unknown", uuid or "unknown"))
        xid = str(int(data.eventData))
        with self._lock:
            self._counts[(gpu, uuid, xid)] += 1
        log.error("Xid %s on GPU %s (%s) at %.0f", xid, gpu, uuid, time.time())

    def _free(self, event_set: object) -> None:
        with contextlib.suppress(pynvml.NVMLError):
            self.session.nvml.nvmlEventSetFree(event_set)
