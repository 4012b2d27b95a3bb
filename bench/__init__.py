"""`make bench`: accuracy against the plain loop (bench.eval) and the GPU feed (bench.gpu_feed) on this machine."""
