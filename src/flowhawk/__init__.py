"""flowhawk: network behavioral analytics on flow telemetry.

Heavy parts (numba kernels, Spark) are imported by the modules that need them,
never here.
"""

__version__ = "0.1.0"
