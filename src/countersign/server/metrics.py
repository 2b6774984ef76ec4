"""Prometheus metrics in the text exposition format, with no dependency."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts and latencies by route, method and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(_BUCKETS))
        self._sums: dict[str, float] = defaultdict(float)
        self._totals: dict[str, int] = defaultdict(int)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request; cheap, because it runs on every request (cumulated at render)."""
        index = bisect.bisect_left(_BUCKETS, seconds)
        with self._lock:
            self._counts[(route, method, status)] += 1
            if index < len(_BUCKETS):
                self._buckets[route][index] += 1
            self._sums[route] += seconds
            self._totals[route] += 1

    def render(self) -> bytes:
        lines = [
            "# HELP countersign_http_requests_total Requests answered, by route and status.",
            "# TYPE countersign_http_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), count in sorted(self._counts.items()):
                lines.append(f'countersign_http_requests_total{{route="{route}",'
                             f'method="{method}",status="{status}"}} {count}')
            lines += [
                "# HELP countersign_http_request_seconds Time to answer, by route.",
                "# TYPE countersign_http_request_seconds histogram",
            ]
            for route in sorted(self._totals):
                cumulative = 0
                for bound, count in zip(_BUCKETS, self._buckets[route], strict=True):
                    cumulative += count
                    lines.append(f'countersign_http_request_seconds_bucket{{route="{route}",'
                                 f'le="{bound}"}} {cumulative}')
                lines.append(f'countersign_http_request_seconds_bucket{{route="{route}",'
                             f'le="+Inf"}} {self._totals[route]}')
                lines.append(f'countersign_http_request_seconds_sum{{route="{route}"}} '
                             f"{self._sums[route]:.6f}")
                lines.append(f'countersign_http_request_seconds_count{{route="{route}"}} '
                             f"{self._totals[route]}")
        return ("\n".join(lines) + "\n").encode()
