"""dlab's benchmarks: accuracy and speed runs too long for the test suite (`python -m benchmarks`)."""
