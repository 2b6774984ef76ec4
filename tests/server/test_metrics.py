"""Prometheus histogram buckets are cumulative, as the exposition format requires."""

from __future__ import annotations

from countersign.server.metrics import Metrics


def test_histogram_is_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 9.0):
        metrics.observe("get", "GET", 200, seconds)
    text = metrics.render().decode()
    assert 'countersign_http_requests_total{route="get",method="GET",status="200"} 5' in text
    assert 'countersign_http_request_seconds_bucket{route="get",le="0.001"} 1' in text
    assert 'countersign_http_request_seconds_bucket{route="get",le="0.005"} 3' in text
    assert 'countersign_http_request_seconds_bucket{route="get",le="0.25"} 4' in text
    assert 'countersign_http_request_seconds_bucket{route="get",le="5.0"} 4' in text
    assert 'countersign_http_request_seconds_bucket{route="get",le="+Inf"} 5' in text
    assert 'countersign_http_request_seconds_count{route="get"} 5' in text
