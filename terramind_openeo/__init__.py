"""terramind-openeo: TerraMind inference as openEO processes and UDFs, on Dask, with Triton kernels.

Layers (imports point down only): ``backend`` -> ``processes`` -> ``inference`` -> ``model`` -> ``kernels``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("terramind-openeo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
