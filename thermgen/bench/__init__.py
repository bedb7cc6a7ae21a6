"""Benchmarks: commands that time or sanity-check one part of the toolkit and print the machine they ran on.

``python -m thermgen.bench.synthetic``   synthetic scene generation (render + 16-bit PNG + ground truth)
``python -m thermgen.bench.fid_sanity``  FID pipeline on real thermal data: real-vs-real far below real-vs-noise
``python -m thermgen.bench.gpu_throughput``  pipeline sampling images/s per dtype and batch (CUDA correctness: tests/gpu/)
"""
