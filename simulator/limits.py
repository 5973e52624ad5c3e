"""A real gateway's limits, as pure decisions: throughput, scripted answers, counts.

No I/O and no clock of their own: the caller passes ``now`` (``time.monotonic()``
for pacing, ``time.time()`` for the per-second counts), so each rule is tested alone.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

REFUSAL_REASONS = ("throughput", "scripted", "dropped", "error", "invalid")
KEEP_SECONDS = 600  # per-second counts kept at least this long, for the benchmark's windows


@dataclass
class Pace:
    """Jasmin 0.11's ``mt_messaging_cred quota http_throughput`` (send.py, "QoS throttling").

    A send is refused when less than 1/throughput seconds passed since the last
    *accepted* one; a refusal does not move that mark, and there is no burst. The
    first send is always accepted.
    """

    last: float | None = None

    def admit(self, throughput: float | None, now: float) -> float:
        """0 when the send may go (and it is marked); otherwise the seconds still to wait."""
        if throughput is not None and self.last is not None:
            wait = 1 / throughput - (now - self.last)
            if wait > 0:
                return wait
        self.last = now
        return 0.0


def retry_after(wait: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def check_throughput(value) -> str | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return None
    return "throughput must be null or a number of sends per second above 0"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def check_script(items) -> str | None:
    """What is wrong with a ``script`` of scripted answers; None when every item is one of:
    ``{"status": 400..599, "text"?: str, "retry_after"?: whole seconds}``, ``{"delay": seconds}``,
    ``{"drop": true}``."""
    if not isinstance(items, list):
        return "script must be a list of answers"
    for index, item in enumerate(items):
        where = f"script[{index}]"
        if not isinstance(item, dict):
            return f"{where} must be an object"
        if "status" in item:
            if set(item) - {"status", "text", "retry_after"}:
                return f'{where}: a status answer takes only "status", "text" and "retry_after"'
            status = item["status"]
            if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
                return f"{where}: status must be a whole number from 400 to 599"
            if not isinstance(item.get("text", ""), str):
                return f"{where}: text must be a string"
            after = item.get("retry_after", 0)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                return f"{where}: retry_after must be a whole number of seconds"
        elif "delay" in item:
            if set(item) != {"delay"} or not _number(item["delay"]):
                return f'{where}: a slow answer is {{"delay": <seconds>}}'
        elif set(item) != {"drop"} or item["drop"] is not True:
            return f'{where} must be {{"status": ...}}, {{"delay": ...}} or {{"drop": true}}'
    return None


@dataclass
class Stats:
    """Every accepted send counted, refusals by reason, and accepted sends per unix second.

    Counting is two dict increments per send; old seconds are pruned once per new second.
    """

    accepted: int = 0
    refused: Counter = field(default_factory=Counter)
    per_second: dict[int, int] = field(default_factory=dict)

    def count_accepted(self, now: float) -> None:
        self.accepted += 1
        second = int(now)
        if second not in self.per_second:
            oldest = second - KEEP_SECONDS
            for old in [s for s in self.per_second if s < oldest]:
                del self.per_second[old]
            self.per_second[second] = 0
        self.per_second[second] += 1

    def reset(self) -> None:
        self.accepted = 0
        self.refused.clear()
        self.per_second.clear()

    def count_refused(self, reason: str) -> None:
        self.refused[reason] += 1

    def as_json(self) -> dict:
        return {"accepted": self.accepted,
                "refused": {reason: self.refused[reason] for reason in REFUSAL_REASONS},
                "per_second": {str(second): count for second, count in sorted(self.per_second.items())}}
