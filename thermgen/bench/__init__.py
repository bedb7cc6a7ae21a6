"""Benchmarks: commands that time or sanity-check one part of the toolkit and print the machine they ran on.

``python -m thermgen.bench.synthetic``   synthetic scene generation (render + 16-bit PNG + ground truth)
``python -m thermgen.bench.fid_sanity``  FID pipeline on real thermal data: real-vs-real far below real-vs-noise
``python -m thermgen.bench.fid_speed``   thermgen.fid vs clean-fid's compute_fid on the same folders: wall time, FIDs
``python -m thermgen.bench.control``     generation control on val: FID, attribute judge and swap tests per checkpoint
``python -m thermgen.bench.grid``        the day/night x cars x altitude sample grid of a pipeline (PNG)
``python -m thermgen.bench.gpu_throughput``  pipeline sampling images/s per dtype and batch (CUDA correctness: tests/gpu/)
``python -m thermgen.bench.curves``      two recipe runs' per-stage loss curves (e.g. 1 vs 2 processes): differences, PNG
``python -m thermgen.bench.sim2real``    T-CLIP pretrained on synthetic scenes, adapted to HIT-UAV by its LoRA adapters
"""
