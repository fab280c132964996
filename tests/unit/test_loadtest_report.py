"""The loadtest report's pure parts: the p99 per slice of the run and the CPU pressure reading."""

from worker.loadtest import cpu_pressure_us, p99_by_slice

PSI = """some avg10=10.88 avg60=2.08 avg300=0.48 total=6101519963
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def test_a_stall_shows_in_its_own_slice():
    steady = [(t / 10.0, 30.0) for t in range(60)]  # 6 s of 30 ms signals, 10 per second
    stall = [(2.5, 900.0), (2.7, 1200.0)]
    by = p99_by_slice(steady + stall, 2.0)
    assert len(by) == 3
    assert by[0] == by[2] == 30.0
    assert by[1] > 1000.0  # the slice holding the stall, and only it


def test_slices_without_signals_are_none_and_no_points_no_slices():
    assert p99_by_slice([(0.1, 40.0), (4.5, 50.0)], 2.0) == [40.0, None, 50.0]
    assert p99_by_slice([], 2.0) == []


def test_cpu_pressure_reads_the_some_total():
    assert cpu_pressure_us(PSI) == 6101519963
    assert cpu_pressure_us("full avg10=0.00 total=5\n") is None
    assert cpu_pressure_us("") is None


def test_percentiles_of_the_benchmarks_interpolate_and_are_none_without_samples():
    from worker.observability.stats import percentile

    assert percentile([], 99) is None
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 100.0], 100) == 100.0
