"""SHA-256 throughput of each hasher this machine runs, per thread: the measurement behind the choice.

    python benchmarks/hashers.py

One 256 MiB buffer (a whole layer: its DiffID) and 6,000 buffers of 10 kB
(files), hashed by the C module's OpenSSL backend and its AVX-512
multi-buffer kernel (where the CPU has AVX-512; every buffer in the lanes,
so the single buffer shows what one stream gets from it), and by Python's
hashlib on one and two Python threads. Best of three.
"""

import hashlib
import os
import threading
import time
from collections.abc import Callable

try:
    from cowcheck import _fastlayer  # type: ignore[attr-defined]
except ImportError:  # the C module is optional: without it, hashers() is empty and hashlib is measured alone
    _fastlayer = None
from cowcheck.fastlayer import cpu_features, hashers


def best(run: Callable[[], object], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def hashlib_threads(buffers: list[memoryview], threads: int) -> None:
    parts = [buffers[start::threads] for start in range(threads)]
    workers = [threading.Thread(target=lambda part=part: [hashlib.sha256(b).digest() for b in part]) for part in parts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def main() -> None:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        model = next((line.partition(":")[2].strip() for line in info if line.startswith("model name")), "?")
    flags = sorted(cpu_features() & {"sha_ni", "sha2", "avx512f", "avx512bw", "avx2"})
    print(f"cpu: {model}; {' '.join(flags)}; {len(os.sched_getaffinity(0))} cores")
    if _fastlayer is None:
        print("the C module is not built (it needs gcc and the headers of Python and OpenSSL): hashlib only")
    pool = memoryview(os.urandom(64 << 20))
    cases = {
        "one 256 MiB buffer": [memoryview(os.urandom(256 << 20))],
        "6000 x 10 kB": [pool[index * 10_000 : (index + 1) * 10_000] for index in range(6000)],
    }
    for label, buffers in cases.items():
        total = sum(len(each) for each in buffers)
        for threads in (1, 2):
            for backend in hashers():
                seconds = best(lambda b=backend, t=threads, s=buffers: _fastlayer.sha256_many(s, backend=b, threads=t))
                print(f"{label:20} {backend:12} threads={threads}: {total / seconds / 1e6:6.0f} MB/s")
            seconds = best(lambda t=threads, s=buffers: hashlib_threads(s, t))
            print(f"{label:20} {'hashlib':12} threads={threads}: {total / seconds / 1e6:6.0f} MB/s")


if __name__ == "__main__":
    main()
