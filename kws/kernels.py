"""CPU kernel caps and OpenMP settings for reproducible training; imported before torch, so no torch here.

MKL, oneDNN and PyTorch pick their kernels by CPU (AVX2, AVX-512, ...), and the kernels round
differently: the same params trained on an AVX-512 machine gave another model (67.0% vs 65.5% on
the real clips). Capped at AVX2 before torch loads, the trained bytes should not depend on the
CPU model (any x86-64 CPU since 2013); a variable already set by the user wins.

The thread count decides the bytes too (threads split the reductions into other partial sums),
and kws.train pins it (at one thread). Two OpenMP variables could undo a pin, so a user's value
does not win: OMP_DYNAMIC=true lets libgomp size every parallel region as (CPUs - 15-minute load
average), so on a busy machine, or a process bound to one CPU, a two-thread training silently ran
on one thread and wrote that thread count's bytes; OMP_THREAD_LIMIT caps it the same way
(docs/reproducibility.md).

OMP_WAIT_POLICY=PASSIVE only changes speed, and only where more than one OpenMP thread runs: a
thread that waits for its partner sleeps at once instead of spinning. With libgomp's default
spinning, two training threads beside one busy core took 2.95x as long per epoch, passive
1.15-1.41x, with the same bytes (bench/bench_busy_core.py --threads 2).

keep_freed_memory() only changes speed as well: see its docstring."""
import ctypes
import os

KERNEL_CAPS = (("MKL_CBWR", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"))
THREAD_PINS = (("OMP_DYNAMIC", "FALSE"), ("MKL_DYNAMIC", "FALSE"))  # set whatever the user set
THREAD_LIMITS = ("OMP_THREAD_LIMIT",)  # removed: training pins its own thread count
SPEED = (("OMP_WAIT_POLICY", "PASSIVE"),)  # the user's value wins: no effect on the bytes


def cap_cpu_kernels() -> None:
    """Call before torch is imported: the libraries read these variables once, when they load."""
    for key, value in KERNEL_CAPS + SPEED:
        os.environ.setdefault(key, value)
    for key, value in THREAD_PINS:
        os.environ[key] = value
    for key in THREAD_LIMITS:
        os.environ.pop(key, None)


def kernel_settings() -> str:
    """The settings in effect that decide the bytes, for the training fingerprint (another cap
    trains other bytes)."""
    keys = [key for key, _ in KERNEL_CAPS + THREAD_PINS] + list(THREAD_LIMITS)
    return " ".join(f"{key}={os.environ.get(key)}" for key in keys)


# mallopt(3) parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Lets glibc keep freed memory for the next allocation instead of giving it back to the kernel.

    A training step allocates and frees tensors of 0.5-1 MB (a batch's activations and their
    gradients) dozens of times. glibc serves such blocks by mmap and unmaps them when freed, and
    returns a free top of its heap above 128 KiB-2 MiB to the kernel, so every step wrote to fresh
    pages, each a page fault: about 690 of them a step. Kept, the pages are reused. The arithmetic
    is untouched (torch aligns its buffers itself); a no-op where the C library has no mallopt."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return
    mallopt(M_MMAP_THRESHOLD, 16 << 20)  # blocks below 16 MiB come from the heap
    mallopt(M_TRIM_THRESHOLD, 256 << 20)  # and up to 256 MiB of free heap stay with the process
