"""Band labels -> modalities, and strict context validation."""

from __future__ import annotations

import pytest

from terramind_openeo.inference import CONTEXT_KEYS, map_bands, output_bands, validate_context
from terramind_openeo.inference.bands import S2L1C_BANDS, S2L2A_BANDS, canonical_band
from terramind_openeo.inference.errors import (
    AmbiguousModalityError,
    BandError,
    ContextError,
    DuplicateBandError,
    InferenceError,
    MissingBandError,
    UnknownContextKeyError,
)


@pytest.mark.parametrize("label,canonical", [("B8A", "B8A"), ("b8a", "B8A"), ("B2", "B02"), ("B02", "B02"),
                                             ("B12", "B12"), ("vv", "VV"), ("VH_dB", "VH"), ("elevation", "DEM"),
                                             ("DEM", "DEM"), ("NDVI", "NDVI"), ("SCL", None), ("B13", None),
                                             ("AOT", None), ("VV_linear", None), ("S2-L2A-B04", "B04"),
                                             ("S2-L2A-B8A", "B8A"), ("S2-L2A-SCL", None), ("S1-SIGMA0-VV", "VV"),
                                             ("S1-VH", "VH"), ("S3-B04", None)])
def test_canonical_band(label, canonical):
    assert canonical_band(label) == canonical


def test_infer_s2l2a_any_order_extra_bands_ignored():
    labels = ["SCL"] + list(reversed(S2L2A_BANDS))
    (layout,) = map_bands(labels, None)
    assert layout.modality == "S2L2A" and layout.bands == S2L2A_BANDS
    assert [labels[i] for i in layout.indices] == list(S2L2A_BANDS)


def test_b10_means_l1c():
    assert [lay.modality for lay in map_bands(list(S2L1C_BANDS), None)] == ["S2L1C"]


def test_multimodal_with_context_modalities():
    labels = list(S2L2A_BANDS) + ["vv", "vh", "elevation"]
    layouts = map_bands(labels, ["S2L2A", "S1RTC", "DEM"])
    assert [lay.modality for lay in layouts] == ["S2L2A", "S1RTC", "DEM"]
    assert layouts[1].indices == (12, 13) and layouts[2].indices == (14,)


def test_sentinel1_needs_the_modality_named():
    with pytest.raises(AmbiguousModalityError, match="S1GRD.*S1RTC.*modalities"):
        map_bands(["VV", "VH"], None)


def test_openeo_tool_labels():
    labels = ["S2-L2A-B02", "S2-L2A-B03", "S1-SIGMA0-VH", "S1-SIGMA0-VV", "elevation", "slope"]
    layouts = map_bands(labels, None, missing_bands="mean")
    assert [lay.modality for lay in layouts] == ["S2L2A", "S1GRD", "DEM"]
    assert layouts[1].indices == (3, 2)


def test_missing_bands_are_named():
    with pytest.raises(MissingBandError) as info:
        map_bands(["B02", "B03", "B04", "B08"], None)
    message = str(info.value)
    for band in ("B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"):
        assert band in message
    assert "missing_bands='mean'" in message
    assert set(info.value.bands) == {"B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"}


def test_missing_bands_mean_fills_but_not_a_whole_modality():
    (layout,) = map_bands(["B02", "B03", "B04", "B08"], None, missing_bands="mean")
    assert layout.missing == ("B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12")
    with pytest.raises(MissingBandError, match="DEM"):
        map_bands(["B02", "B03"], ["S2L2A", "DEM"], missing_bands="mean")


@pytest.mark.parametrize("labels,culprits", [(["B02", "B02", "B03"], ["B02"]), (["VV", "vv_dB"], ["VV", "vv_dB"]),
                                             (["B8A", "b8a"], ["B8A", "b8a"])])
def test_duplicate_bands(labels, culprits):
    with pytest.raises(DuplicateBandError) as info:
        map_bands(labels, ["S1GRD"] if "VV" in labels else None, missing_bands="mean")
    assert info.value.bands == culprits


def test_no_modality_at_all():
    with pytest.raises(BandError, match="SCL"):
        map_bands(["SCL", "AOT"], None)


def test_defaults_and_kinds():
    embed = validate_context("embed", None)
    assert (embed.tile_size, embed.overlap, embed.weights) == (224, 32, "hub")
    assert (embed.resolution, embed.layer, embed.merge, embed.tile_anchor) == ("patch", -1, "mean", "crs")
    gen = validate_context("generate", {"target": ["S1GRD", "LULC"], "seed": 3.0})
    assert gen.target == ("S1GRD", "LULC") and gen.seed == 3
    assert validate_context("generate", gen.as_context()) == gen
    for key in CONTEXT_KEYS.values():
        assert key.doc and key.type


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(UnknownContextKeyError) as info:
        validate_context("embed", {"tilesize": 256})
    assert "tilesize" in str(info.value) and "tile_size" in str(info.value) and "overlap" in str(info.value)
    with pytest.raises(UnknownContextKeyError, match="'target'"):
        validate_context("embed", {"target": "LULC"})  # a generation key is not an embedding key


@pytest.mark.parametrize("context,key", [
    ({"tile_size": "224"}, "tile_size"), ({"tile_size": 200}, "tile_size"), ({"tile_size": True}, "tile_size"),
    ({"overlap": 150}, "overlap"), ({"overlap": 24}, "overlap"), ({"batch_size": 0}, "batch_size"),
    ({"model": "terramind_v2"}, "model"), ({"weights": None}, "weights"), ({"modalities": ["S3"]}, "modalities"),
    ({"modalities": []}, "modalities"), ({"s1_linear": "yes"}, "s1_linear"), ({"s2_offset": "1000"}, "s2_offset"),
    ({"device": "tpu"}, "device"), ({"dtype": "float64"}, "dtype"), ({"merge": "sum"}, "merge"),
    ({"layer": 1.5}, "layer"), ({"nodata": float("nan")}, "nodata"), ({"resolution": "native"}, "resolution"),
    ({"tile_anchor": "utm"}, "tile_anchor"), ({"missing_bands": "zero"}, "missing_bands"),
])
def test_wrong_values_name_the_key(context, key):
    with pytest.raises(ContextError) as info:
        validate_context("embed", context)
    assert info.value.key == key and key in str(info.value)
    assert isinstance(info.value, (InferenceError, ValueError))


@pytest.mark.parametrize("context,key", [({"target": "S2RGB"}, "target"), ({"top_p": 0}, "top_p"),
                                         ({"temperature": -1}, "temperature"), ({"timesteps": 0}, "timesteps"),
                                         ({"argmax": 1}, "argmax"), ({"seed": "1"}, "seed"), ({"top_k": -1}, "top_k")])
def test_wrong_generation_values(context, key):
    with pytest.raises(ContextError) as info:
        validate_context("generate", context)
    assert info.value.key == key


def test_overlap_not_multiple_of_16_is_fine_for_pixel_outputs():
    assert validate_context("embed", {"overlap": 24, "resolution": "pixel"}).overlap == 24
    assert validate_context("generate", {"overlap": 8}).overlap == 8


def test_output_bands():
    assert output_bands("embed", {"model": "terramind_v1_tiny"})[-1] == "emb_191"
    assert len(output_bands("embed", {"model": "terramind_v1_tiny", "merge": "concat"},
                            list(S2L2A_BANDS) + ["DEM"])) == 2 * 192
    assert output_bands("generate", {"target": "LULC", "probabilities": True})[:2] == ["LULC", "LULC_P00"]
    assert output_bands("generate", {"target": ["S1GRD", "S1RTC"]}) == ["S1GRD_VV", "S1GRD_VH", "S1RTC_VV",
                                                                        "S1RTC_VH"]
