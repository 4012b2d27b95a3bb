"""`make bench`: throughput and accuracy of the worker on this machine (python -m bench.run)."""
