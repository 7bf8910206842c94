"""Pre-training mean and standard deviation per modality and band (TerraMind v1), and (de)standardisation.

Raw units: Sentinel-2 as reflectance x 10000 (digital numbers, L2A/L1C), S2RGB as uint8, Sentinel-1 as dB,
DEM in metres, NDVI as a ratio. ``s2_offset`` is the radiometric offset the data carries (ESA processing
baseline 04.00 and later add +1000 to Sentinel-2 digital numbers): it is subtracted before standardising.
It is a parameter, never guessed: the same product line holds tiles with and without it.
"""

from __future__ import annotations

import numpy as np
import torch

from terramind_openeo.model.errors import InputShapeError, UnknownModalityError

# Values of terratorch 1.2's v1 pre-training statistics; band orders as in config.RAW_MODALITIES.
MEAN: dict[str, tuple[float, ...]] = {
    "S2L2A": (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
              2424.884, 1857.648),
    "S2L1C": (2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56, 3306.481, 1473.847,
              506.07, 2472.825, 1838.929),
    "S2RGB": (87.271, 80.931, 66.667),
    "S1GRD": (-12.599, -20.293),
    "S1RTC": (-10.93, -17.329),
    "DEM": (670.665,),
    "NDVI": (0.327,),
    "LULC": (0.0,),
}
STD: dict[str, tuple[float, ...]] = {
    "S2L2A": (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
              1434.261, 1334.311),
    "S2L1C": (1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26, 1024.687,
              442.165, 1331.411, 1160.419),
    "S2RGB": (58.767, 47.663, 42.631),
    "S1GRD": (5.195, 5.890),
    "S1RTC": (4.391, 4.459),
    "DEM": (951.272,),
    "NDVI": (0.322,),
    "LULC": (1.0,),
}
S2_MODALITIES = ("S2L2A", "S2L1C")
"""The modalities to which ``s2_offset`` applies."""


def _stats(modality: str, x, s2_offset: float):
    name = modality.removeprefix("tok_") if isinstance(modality, str) else modality
    if name not in MEAN:
        raise UnknownModalityError(f"no standardisation statistics for {modality!r}; expected one of "
                                   f"{', '.join(MEAN)}")
    mean = np.asarray(MEAN[name], dtype=np.float64)
    if name in S2_MODALITIES:
        mean = mean + float(s2_offset)
    std = np.asarray(STD[name], dtype=np.float64)
    channel_axis = x.ndim - 3
    if x.ndim < 3 or x.shape[channel_axis] != len(mean):
        raise InputShapeError(f"{modality} data must have {len(mean)} band(s) on axis -3 ([..., C, H, W]), "
                              f"got shape {list(x.shape)}")
    shape = (len(mean), 1, 1)
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return (torch.as_tensor(mean.reshape(shape), dtype=dtype, device=x.device),
                torch.as_tensor(std.reshape(shape), dtype=dtype, device=x.device), dtype)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return mean.reshape(shape).astype(dtype), std.reshape(shape).astype(dtype), dtype


def standardize(modality: str, x, s2_offset: float = 0):
    """``(x - (mean + offset)) / std`` per band; ``x`` is ``[..., C, H, W]`` (torch or numpy).

    Integers become float32; float inputs keep their dtype. ``s2_offset`` applies to S2L2A and S2L1C only.
    """
    mean, std, dtype = _stats(modality, x, s2_offset)
    x = x.to(dtype) if isinstance(x, torch.Tensor) else x.astype(dtype, copy=False)
    return (x - mean) / std


def destandardize(modality: str, x, s2_offset: float = 0):
    """Inverse of :func:`standardize`: ``x * std + mean + offset`` (physical units)."""
    mean, std, dtype = _stats(modality, x, s2_offset)
    x = x.to(dtype) if isinstance(x, torch.Tensor) else x.astype(dtype, copy=False)
    return x * std + mean
