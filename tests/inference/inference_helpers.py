"""Helpers of the inference tests: openEO-style cubes from the real sample data, stand-in models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor
import torch
import xarray as xr

from terramind_openeo.inference.bands import S2L2A_BANDS

SITE = "282D_485L_3_3"
TINY = {"model": "terramind_v1_tiny", "weights": "random"}
EXAMPLE_BANDS = {"S2L2A": list(S2L2A_BANDS), "S1RTC": ["VV", "VH"], "DEM": ["DEM"]}


def example_cube(root: Path, modalities: list[str], site: str = SITE) -> xr.DataArray:
    """A TerraMesh sample tile as an openEO back-end hands it to a UDF: dims (bands, y, x), labelled."""

    parts = []
    for modality in modalities:
        da = rioxarray.open_rasterio(root / modality / f"{site}.tif").astype(np.float32)
        parts.append(da.rename(band="bands").assign_coords(bands=EXAMPLE_BANDS[modality]))
    return xr.concat(parts, dim="bands", coords="minimal", compat="override", join="override")


def bolzano_cube(shared_data: Path, dates: int = 1, bands: tuple[str, ...] = ("B02", "B03", "B04", "B08"),
                 ) -> xr.DataArray:
    """The openEO-exported Sentinel-2 time series as a (t, bands, y, x) cube (0 = nodata -> NaN)."""
    path = shared_data / "openeo-s2-timeseries" / "s2_l2a_bolzano_12dates.nc"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    ds = xr.open_dataset(path)
    cube = ds[list(bands)].isel(t=slice(0, dates)).to_array(dim="bands").transpose("t", "bands", "y", "x")
    return cube.load()


def make_synthetic_cube() -> xr.DataArray:
    """A 12-band S2L2A-like cube with real-looking coordinates (UTM 32N, 10 m, y descending)."""
    rng = np.random.default_rng(0)
    height, width = 200, 184
    data = rng.uniform(0, 5000, size=(2, 12, height, width)).astype(np.float32)
    x = 600005.0 + 10.0 * np.arange(width)
    y = 5100005.0 - 10.0 * np.arange(height)
    cube = xr.DataArray(data, dims=("t", "bands", "y", "x"),
                        coords={"t": np.array(["2022-06-01", "2022-06-11"], dtype="datetime64[ns]"),
                                "bands": list(S2L2A_BANDS), "y": y, "x": x})
    return cube.rio.write_crs("EPSG:32632")


class PatchModel:
    """Stand-in TerraMind: each token is a function of its own 16 x 16 patch only, each generated pixel a
    function of its own input pixel, so a correctly tiled and blended result equals the untiled one."""

    def __init__(self, dim: int = 6):
        self.config = SimpleNamespace(dim=dim, patch_size=16)
        self.encode_calls = 0
        self.generate_calls = 0

    @staticmethod
    def standardize(modality, x, s2_offset=0):
        return (x - 2000.0 - s2_offset) / 1000.0

    def encode(self, inputs, layers=None, merge=None, tim=None):
        self.encode_calls += 1
        x = torch.cat([inputs[m] for m in inputs], dim=1).float()  # [B, C, T, T]
        b, c, h, w = x.shape
        patches = x.reshape(b, c, h // 16, 16, w // 16, 16)
        feats = [patches.mean(dim=(3, 5)), patches.std(dim=(3, 5)), patches.amax(dim=(3, 5))]
        grid = torch.cat(feats, dim=1)[:, : self.config.dim]  # [B, D, h, w]
        return grid.flatten(2).transpose(1, 2)  # [B, h*w, D]

    def generate(self, inputs, targets, seed=None, **options):
        self.generate_calls += 1
        x = inputs["S2L2A"].float()
        out = {}
        for target in targets:
            if target == "LULC":
                classes = ((x[:, 3] - x[:, 7]).mul(3).floor().clamp(-5, 4) + 5).long()
                out[target] = torch.nn.functional.one_hot(classes, 10).permute(0, 3, 1, 2).float()
            elif target == "NDVI":
                out[target] = torch.tanh(x[:, 7:8] - x[:, 3:4])
            else:
                raise KeyError(target)
        return out


class ExplodingModel:
    """Any use is a test failure: bad input must be refused before model work starts."""

    config = SimpleNamespace(dim=4)

    def __getattr__(self, name):
        raise AssertionError(f"model touched ({name}) although the input is bad")


def patch_truth(cube: xr.DataArray) -> np.ndarray:
    """Untiled PatchModel embedding of a (bands, y, x) cube whose first pixel sits at a multiple of 16."""
    x = torch.from_numpy(PatchModel.standardize("S2L2A", cube.values.astype(np.float32)))[None]
    tokens = PatchModel().encode({"S2L2A": x})  # [1, h*w, D]
    return tokens.transpose(1, 2).reshape(-1, x.shape[2] // 16, x.shape[3] // 16).numpy()
