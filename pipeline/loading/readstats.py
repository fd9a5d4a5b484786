"""What a shard reader delivered and skipped (:class:`ReadStats`), and the warning it logs.

Corrupt data is skipped, warned about (a ``log.warning`` naming the shard and the key) and
counted; the counts travel with the loader's batches and are summed in the main process (see
:mod:`pipeline.loading.loader`); a job sums them up in one line at its end
(:meth:`ReadStats.events_counts`, :func:`pipeline.core.logs.report_events`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

log = logging.getLogger(__name__)

MAX_EVENTS = 20


@dataclasses.dataclass
class ReadStats:
    """What a reader delivered and skipped. ``corrupt`` sums the skip reasons."""

    samples: int = 0             # decoded samples delivered
    shards_opened: int = 0       # shard reads started (with resampling a shard is read many times)
    corrupt_samples: int = 0     # a member failed to decode (JPEG, PNG, JSON, sizes disagree)
    incomplete_samples: int = 0  # a member is missing (e.g. cut off) or the sample is not a `kind`
    truncated_shards: int = 0    # the tar itself is truncated/corrupt: the rest of it is skipped
    ignored_members: int = 0     # members never read: unknown extensions (.pyd, .pickle, .pth, ...)
    events: list = dataclasses.field(default_factory=list)  # last (reason, shard, key, message)

    COUNTS = ("samples", "shards_opened", "corrupt_samples", "incomplete_samples",
              "truncated_shards", "ignored_members")

    @property
    def corrupt(self) -> int:
        return self.corrupt_samples + self.incomplete_samples + self.truncated_shards

    def record(self, reason: str, shard: str, key: str | None, message: str, warn: bool = True):
        setattr(self, reason, getattr(self, reason) + 1)
        self.events.append((reason, shard, key, message))
        del self.events[:-MAX_EVENTS]
        if warn:
            log.warning("skipped (%s) shard %s key %r: %s", reason, shard, key, message)

    def events_counts(self) -> dict[str, int]:
        """The counts of data events (skips and ignored members), for a job's summary line."""
        return {k: getattr(self, k) for k in self.COUNTS if k not in ("samples", "shards_opened")}

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.COUNTS}
        d["corrupt"] = self.corrupt
        d["events"] = list(self.events)
        return d

    def add(self, other: "ReadStats | Mapping[str, Any]") -> None:
        get = other.get if isinstance(other, Mapping) else (lambda k, d=0: getattr(other, k, d))
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + int(get(k, 0)))
        self.events.extend(tuple(e) for e in (get("events", []) or []))
        del self.events[:-MAX_EVENTS]

    def delta_since(self, last: dict[str, int]) -> dict[str, Any]:
        """Counts (and skip events) since the snapshot ``last``, which is updated in place."""
        d: dict[str, Any] = {k: getattr(self, k) - last.get(k, 0) for k in self.COUNTS}
        new = d["corrupt_samples"] + d["incomplete_samples"] + d["truncated_shards"]
        d["events"] = list(self.events[-new:]) if new else []
        for k in self.COUNTS:
            last[k] = getattr(self, k)
        return d
