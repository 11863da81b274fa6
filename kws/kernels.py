"""CPU kernel caps for reproducible training; imported before torch, so no torch here.

MKL, oneDNN and PyTorch pick their kernels by CPU (AVX2, AVX-512, ...), and the kernels round
differently: the same params trained on an AVX-512 machine gave another model (67.0% vs 65.5% on
the real clips). Capped at AVX2 before torch loads, the trained bytes should not depend on the
CPU model (any x86-64 CPU since 2013); a variable already set by the user wins."""
import os

KERNEL_CAPS = (("MKL_CBWR", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"))


def cap_cpu_kernels() -> None:
    """Call before torch is imported: the libraries read these variables once, when they load."""
    for key, value in KERNEL_CAPS:
        os.environ.setdefault(key, value)


def kernel_settings() -> str:
    """The caps in effect, for the training fingerprint (another cap trains other bytes)."""
    return " ".join(f"{key}={os.environ.get(key)}" for key, _ in KERNEL_CAPS)
