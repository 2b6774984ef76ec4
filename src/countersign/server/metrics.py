"""Prometheus metrics in the text exposition format, with no dependency."""

from __future__ import annotations

import bisect
from typing import Any

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts and latencies by route, method and status.

    Observed on the server's event loop only (one thread), so the counters need no
    lock; the histogram is cumulated when it is rendered, not on every request.
    """

    def __init__(self) -> None:
        # (route, method, status) -> [count, sum of seconds, per-bucket counts...]
        self._series: dict[tuple[str, str, int], list[Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request; cheap, because it runs on every request."""
        if method not in _METHODS:  # the client's word: bounded, so the series are
            method = "OTHER"
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[(route, method, status)] = [0, 0.0, [0] * len(_BUCKETS)]
        series[0] += 1
        series[1] += seconds
        index = bisect.bisect_left(_BUCKETS, seconds)
        if index < len(_BUCKETS):
            series[2][index] += 1

    def render(self) -> bytes:
        counts: dict[tuple[str, str, int], int] = {}
        buckets: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        totals: dict[str, int] = {}
        for (route, method, status), (count, seconds, by_bucket) in list(self._series.items()):
            counts[(route, method, status)] = count
            into = buckets.setdefault(route, [0] * len(_BUCKETS))
            for index, n in enumerate(by_bucket):
                into[index] += n
            sums[route] = sums.get(route, 0.0) + seconds
            totals[route] = totals.get(route, 0) + count
        lines = [
            "# HELP countersign_http_requests_total Requests answered, by route and status.",
            "# TYPE countersign_http_requests_total counter",
        ]
        for (route, method, status), count in sorted(counts.items()):
            lines.append(f'countersign_http_requests_total{{route="{route}",'
                         f'method="{method}",status="{status}"}} {count}')
        lines += [
            "# HELP countersign_http_request_seconds Time to answer, by route.",
            "# TYPE countersign_http_request_seconds histogram",
        ]
        for route in sorted(totals):
            cumulative = 0
            for bound, count in zip(_BUCKETS, buckets[route], strict=True):
                cumulative += count
                lines.append(f'countersign_http_request_seconds_bucket{{route="{route}",'
                             f'le="{bound}"}} {cumulative}')
            lines.append(f'countersign_http_request_seconds_bucket{{route="{route}",'
                         f'le="+Inf"}} {totals[route]}')
            lines.append(f'countersign_http_request_seconds_sum{{route="{route}"}} '
                         f"{sums[route]:.6f}")
            lines.append(f'countersign_http_request_seconds_count{{route="{route}"}} '
                         f"{totals[route]}")
        return ("\n".join(lines) + "\n").encode()
