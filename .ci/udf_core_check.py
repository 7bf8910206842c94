"""Run udf/terramind_generate.py through the openEO client's run_udf_code on a real Sentinel-2 tile, in an
environment that holds only the core install of terramind-openeo (and the client): what a host back-end's
UDF workers get from the UDF's PEP 723 header. Run by .ci/udf_core_install.sh, not by pytest.

    python .ci/udf_core_check.py UDF_FILE TILE.tif
"""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import rioxarray
from openeo.udf import UdfData, XarrayDataCube, run_udf_code

import terramind_openeo
from terramind_openeo.inference.bands import S2L2A_BANDS


def main(udf_file: str, tile: str) -> int:
    heavy = [m for m in ("fastapi", "uvicorn", "openeo_processes_dask", "distributed", "zarr", "netCDF4",
                         "rio_cogeo", "odc") if importlib.util.find_spec(m) is not None]
    if heavy:
        print(f"FAIL: the core install pulled in {heavy}", file=sys.stderr)
        return 1
    cube = rioxarray.open_rasterio(tile).astype(np.float32).isel(y=slice(0, 64), x=slice(0, 64))
    cube = cube.rename(band="bands").assign_coords(bands=list(S2L2A_BANDS))
    context = {"model": "terramind_v1_tiny", "weights": "random", "target": "LULC", "argmax": True,
               "tile_size": 64, "overlap": 0}
    start = time.perf_counter()
    data = UdfData(datacube_list=[XarrayDataCube(cube)], user_context=context)
    result = run_udf_code(open(udf_file, encoding="utf-8").read(), data).get_datacube_list()[0].get_array()
    seconds = time.perf_counter() - start
    classes = np.unique(result.values[np.isfinite(result.values)])
    ok = result.dims == ("bands", "y", "x") and result.shape == (1, 64, 64) and classes.size >= 1 \
        and set(classes.tolist()) <= set(range(10))
    print(f"{'ok' if ok else 'FAIL'}: terramind-openeo {terramind_openeo.__version__} from {terramind_openeo.__file__}; "
          f"{udf_file} on {tile}: {result.dims} {result.shape}, classes {classes.astype(int).tolist()}, "
          f"{seconds:.1f} s")
    if "fastapi" in sys.modules or "openeo_processes_dask" in sys.modules:
        print("FAIL: the UDF imported the back-end or the engine", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
