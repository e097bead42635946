"""Throughput, overhead and memory benchmarks of the three ways to embed documents (``make bench``)."""
