"""Property-based (hypothesis) check of dsp_loss against the loop reference over random annotation batches, shapes,
class counts, temperatures, dtypes and layouts (loss_properties.py). A few derandomised examples here;
benchmarks/fuzz_ops.py runs many more."""

from hypothesis import HealthCheck, given, settings
from loss_properties import check_dsp_loss, dsp_loss_cases


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=dsp_loss_cases())
def test_dsp_loss_matches_the_loop_reference_on_random_batches(case):
    check_dsp_loss(case)
