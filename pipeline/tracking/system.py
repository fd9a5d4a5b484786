"""System metrics (CPU, memory, disk, network, GPU) from MLflow's own monitors, sampled on a
thread into the tracker's buffered, spooled path."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class SystemSampler(threading.Thread):
    """Samples MLflow's system monitors every ``interval`` seconds and hands each sample to
    ``record(metrics, step, flush)`` (the tracker's buffered, spooled path)."""

    def __init__(self, record: Callable[[dict[str, float], int, bool], None], interval: float,
                 first_step: int = 0):
        super().__init__(daemon=True, name="stcnn-system-metrics")
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        self.monitors = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        try:
            from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
            self.monitors.append(GPUMonitor())
        except Exception:  # noqa: BLE001 - no NVIDIA GPU or no pynvml
            pass
        self.record, self.interval, self.step = record, interval, first_step
        self.stop_event = threading.Event()

    def sample(self) -> None:
        metrics: dict[str, float] = {}
        for m in self.monitors:
            m.collect_metrics()
            metrics.update(m.aggregate_metrics())
            m.clear_metrics()
        if metrics:
            self.record({f"system/{k}": v for k, v in metrics.items()}, self.step,
                        flush=True)
            self.step += 1

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - never kill training over a psutil hiccup
                log.debug("system metrics sample failed: %s", e)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
