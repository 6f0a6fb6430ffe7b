"""Imported first by the one-core benchmarks: polars, numba, OpenMP and BLAS then start
with one thread each (they read these variables when they are first imported)."""

import os

for _var in (
    "POLARS_MAX_THREADS",
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
):
    os.environ[_var] = "1"
