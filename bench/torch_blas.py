"""Which BLAS the PyTorch peer's matrix products run on.

Debian's python3-torch calls whatever libblas.so.3 the system's alternatives
point to. Without OpenBLAS that is the reference BLAS, which is tens of
times slower, and a ratio against such a peer says nothing about
NeuralForge. scripts/setup.sh installs OpenBLAS; this check refuses to
report a ratio against the reference BLAS."""
import sys

import torch  # noqa: F401  (loads the libblas.so.3 it is linked against)


def blas_library():
    """The path of the BLAS library loaded into this process (by importing torch)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            path = fields[5] if len(fields) >= 6 else ""
            if path.rsplit("/", 1)[-1].startswith(("libblas.", "libopenblas", "libmkl_rt", "libblis")):
                return path
    return "unknown"


def require_optimized_blas():
    """Returns the BLAS path; exits with an error when it is the reference BLAS."""
    path = blas_library()
    if "/blas/libblas.so" in path:
        sys.exit(f"error: PyTorch runs its products on the reference BLAS ({path}), which is tens of times "
                 "slower than an optimized one; install OpenBLAS (scripts/setup.sh does) and run again")
    return path
