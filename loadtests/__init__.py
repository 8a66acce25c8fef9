"""segue load generators and benchmarks."""
