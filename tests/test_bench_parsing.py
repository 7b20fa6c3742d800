"""The relay benchmark reads wrk's report right (the bench runs by hand; its parsing is tested
here, since a misread figure would go into docs/performance.md)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "relay_bench.py"

# The shape of `wrk -t1 -c50 -d5s --latency` output; the thread table's "+/- Stdev" column
# ends in 99% and 50% here, as it did in the run whose p99 read as nan.
REPORT = """Running 5s test @ http://127.0.0.1:40000/?token=bench
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  412.20us  21.30ms   67.99%
    Req/Sec    47.93k     2.61k   52.01k    72.50%
  Latency Distribution
     50%  987.00us
     75%    1.20ms
     90%    1.48ms
     99%    2.31ms
  238521 requests in 5.00s, 25.02MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  47702.55
Transfer/sec:      5.00MB
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relay_bench_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_percentiles_come_from_the_distribution_not_the_thread_table(
    bench: ModuleType,
) -> None:
    result = bench.parse_wrk(REPORT)
    assert result.rps == 47702.55
    assert result.p50_ms == pytest.approx(0.987)
    assert result.p99_ms == pytest.approx(2.31)
    assert result.errors == 3 + 1 + 2 + 4
    assert result.requests == 238521


@pytest.mark.parametrize(
    ("text", "ms"),
    [("762.00us", 0.762), ("8.60ms", 8.6), ("1.02s", 1020.0), ("1.50m", 90000.0),
     ("1.2e+03ms", 1200.0)],
)  # fmt: skip
def test_every_unit_wrk_prints_is_read(bench: ModuleType, text: str, ms: float) -> None:
    assert bench._ms(text) == pytest.approx(ms)


def test_an_unreadable_figure_is_said_and_left_out_of_the_median(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert math.isnan(bench._ms("-nanus"))
    assert "-nanus" in capsys.readouterr().err
    nan = float("nan")
    runs = {
        "relay": [bench.WrkResult(1, 1, nan, 0), bench.WrkResult(1, 1, 3, 0),
                  bench.WrkResult(1, 1, 5, 0)],
        "none read": [bench.WrkResult(1, 1, nan, 0)],
    }  # fmt: skip
    medians = bench._median(runs, "p99_ms")
    assert medians["relay"] == 4.0
    assert math.isnan(medians["none read"])
