"""Time synthetic scene generation: ``python -m thermgen.bench.synthetic``.

Writes ``--n`` scenes (default 1,000 at 128 x 128) with :func:`thermgen.data.synthetic.generate`
into a temporary folder (deleted afterwards unless ``--out`` is given), then prints the machine
facts (CPU model, cores usable, load average, Python/NumPy versions), the wall time, the CPU time
(the fairer figure on a shared machine), scenes per second and the dataset size. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def machine_facts() -> dict:
    """CPU model, logical cores, cores this process may use, load average, memory, versions."""
    import numpy
    import scipy

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes), seconds."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of scenes to generate (default: 1000)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default: 1; the files do not depend on it)")
    p.add_argument("--out", type=Path, default=None, help="keep the dataset in this folder (default: a temporary folder, deleted)")
    p.add_argument("--progress", action="store_true", help="show a progress bar (default: off, so it does not disturb the timing)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (default: readable lines)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1 or args.size < 8 or args.workers < 1:
        print("error: --n >= 1, --size >= 8 and --workers >= 1 are required", file=sys.stderr)
        return 2
    from thermgen.data.synthetic import generate, render_scene

    facts = machine_facts()
    render_scene(0, 16)  # build the radiance table and import everything before timing
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.mkdtemp(prefix="thermgen-bench-")
        out = Path(tmp) / "synthetic"
    try:
        t0, c0 = time.perf_counter(), _cpu_seconds()
        generate(out, args.n, size=args.size, seed=args.seed, progress=args.progress, workers=args.workers)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        nbytes = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "synthetic scenes (render + 16-bit PNG + ground truth)",
        "n": args.n,
        "size": args.size,
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "ms_per_scene": round(1000 * seconds / args.n, 3),
        "scenes_per_second": round(args.n / seconds, 1),
        "dataset_mb": round(nbytes / 1e6, 2),
        "machine": facts,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = facts
        print(f"machine: {m['cpu']}; {m['usable_cores']} of {m['logical_cores']} cores usable; load average {m['load_average_1_5_15']}; "
              f"{m['memory_gb']} GB; Python {m['python']}, NumPy {m['numpy']}, SciPy {m['scipy']}; {m['platform']}")
        print(f"{args.n} scenes at {args.size}x{args.size}, {args.workers} worker(s): {seconds:.2f} s wall "
              f"({result['ms_per_scene']:.1f} ms/scene, {result['scenes_per_second']:.0f} scenes/s), {cpu:.2f} s CPU, "
              f"{result['dataset_mb']} MB written")
        if m["load_average_1_5_15"] and m["load_average_1_5_15"][0] > m["usable_cores"]:
            print("note: the machine was busy (load above its core count); CPU seconds are the fairer figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
