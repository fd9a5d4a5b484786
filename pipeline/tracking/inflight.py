"""Metrics in flight on MLflow's asynchronous logging queue, and the failures reaped from them
into the spool: the training thread hands a batch over (~0.1 ms) instead of waiting for
``log_batch`` (16-36 ms per call on loopback, measured; more across a network)."""

from __future__ import annotations

from concurrent.futures import Future

import mlflow
from mlflow.utils.async_logging.run_operations import RunOperations

from pipeline.tracking.send import send_metrics


def _futures(op) -> list[Future] | None:
    """The futures behind one of MLflow's ``RunOperations`` (None if MLflow changed them)."""
    futures = getattr(op, "_operation_futures", None)
    return list(futures) if isinstance(futures, list) else None


def async_supported() -> bool:
    """Whether MLflow's ``RunOperations`` still hold futures this module can watch (if not, the
    tracker sends synchronously)."""
    return _futures(RunOperations([])) is not None


class InFlight:
    """Submissions of metrics entries to MLflow's async queue, each kept with its entries until
    its futures finish, so that a failed one goes to the spool (or is set aside) like a failed
    synchronous call; nothing is dropped."""

    def __init__(self) -> None:
        self._items: list[tuple[list[Future], list[dict]]] = []
        self.submitted = 0                    # submissions so far (what tests look at)

    def __len__(self) -> int:
        return len(self._items)

    def submit(self, client: mlflow.MlflowClient, run_id: str, entries: list[dict]) -> None:
        ops = send_metrics(client, run_id, entries, synchronous=False)
        futures = [f for op in ops for f in (_futures(op) or [])]
        self._items.append((futures, entries))
        self.submitted += 1

    def reap(self, block: bool) -> list[tuple[list[dict], BaseException]]:
        """(entries, error) of every finished submission that failed; finished ones are
        forgotten. With ``block``, waits for all of them first."""
        failed: list[tuple[list[dict], BaseException]] = []
        keep: list[tuple[list[Future], list[dict]]] = []
        for futures, entries in self._items:
            if not block and not all(f.done() for f in futures):
                keep.append((futures, entries))
                continue
            error = next((e for e in (f.exception() for f in futures) if e is not None), None)
            if error is not None:
                failed.append((entries, error))
        self._items = keep
        return failed
