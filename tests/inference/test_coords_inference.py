"""The cube's location as TerraMind's coords modality, and coords as a generation target, on cubes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from inference_helpers import TINY, PatchModel, example_cube, make_synthetic_cube
from pyproj import Transformer

from terramind_openeo.inference import embed_cube, generate_cube, locate_tiles, output_bands, runner, validate_context
from terramind_openeo.inference.errors import ContextError
from terramind_openeo.inference.geo import POLE_LATITUDE

SITES = ["282D_485L_3_3", "38D_378R_2_3", "637U_59R_1_3"]


def _to_wgs84(crs, x, y):
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)


def _centres(cube, context):
    plan = runner._plan("embed", cube, {**TINY, **context, "coords": True})
    return plan, plan.centres


def _cube_at(crs: str, x0: float, y0: float, size: int = 448, res: float = 10.0) -> xr.DataArray:
    """A 12-band S2L2A cube of ``size`` px whose first pixel centre is (x0, y0), in ``crs``."""
    data = np.random.default_rng(0).uniform(500, 3000, (12, size, size)).astype(np.float32)
    cube = xr.DataArray(data, dims=("bands", "y", "x"),
                        coords={"bands": list(make_synthetic_cube().bands.values),
                                "y": y0 - res * np.arange(size), "x": x0 + res * np.arange(size)})
    return cube.rio.write_crs(crs)


# ------------------------------------------------------------------------------------- tile centres


@pytest.mark.parametrize("site", SITES)
def test_one_tile_centre_is_the_pyproj_centre_of_the_real_tile(terramind_examples, site):
    """A 224 px TerraMesh tile (UTM) as one tile: its location is its footprint's centre, transformed."""
    cube = example_cube(terramind_examples, ["S2L2A"], site=site)
    with rasterio.open(Path(terramind_examples) / "S2L2A" / f"{site}.tif") as src:
        left, bottom, right, top = src.bounds
        expected = _to_wgs84(src.crs.to_wkt(), (left + right) / 2, (bottom + top) / 2)
        assert src.crs.to_epsg() // 100 in (326, 327)  # UTM north / south
    _, centres = _centres(cube, {"tile_anchor": "cube", "overlap": 0})
    assert list(centres) == [(0, 0)]
    np.testing.assert_allclose(centres[(0, 0)], expected, rtol=0, atol=1e-9)


def test_every_tile_centre_on_the_crs_anchored_grid(terramind_examples):
    cube = example_cube(terramind_examples, ["S2L2A"], site=SITES[2])
    plan, centres = _centres(cube, {"tile_size": 64, "overlap": 16})
    with rasterio.open(Path(terramind_examples) / "S2L2A" / f"{SITES[2]}.tif") as src:
        t, crs = src.transform, src.crs.to_wkt()
    grid = plan.grid
    assert len(centres) == len(grid.row_origins) * len(grid.col_origins) > 16
    for (row, col), lonlat in centres.items():
        # a tile covers grid pixels row .. row + 63: its centre is 32 px from its leading edges
        x = t.c + (col - grid.col0 + 32) * t.a
        y = t.f + (row - grid.row0 + 32) * t.e
        np.testing.assert_allclose(lonlat, _to_wgs84(crs, x, y), rtol=0, atol=1e-9)


def test_a_tile_across_the_antimeridian_takes_its_centre_point():
    """UTM 60S around lon 180 (Fiji): the tile straddling the antimeridian gets the longitude of its centre
    point (not the mean of its corners, which would be near 0), within -180..180."""
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True).transform(180.0, -17.0)
    cube = _cube_at("EPSG:32760", x - 1115, y + 1115)  # 448 px: tile (1, 1) of 224 px holds lon 180
    _, centres = _centres(cube, {"tile_anchor": "cube", "overlap": 0})
    assert len(centres) == 4
    lons = []
    for (row, col), (lon, lat) in centres.items():
        cx = cube.x.values[0] + (col + 111.5) * 10
        cy = cube.y.values[0] - (row + 111.5) * 10
        np.testing.assert_allclose((lon, lat), _to_wgs84("EPSG:32760", cx, cy), atol=1e-9)
        corners = _to_wgs84("EPSG:32760", [cx - 1120, cx + 1120], [cy, cy])[0]
        lons.append((lon, corners))
        assert -180 <= lon <= 180
    crossing = [lon for lon, corners in lons if np.sign(corners[0]) != np.sign(corners[1])]
    assert crossing, "the test cube must hold a tile across the antimeridian"
    assert all(abs(lon) > 179.9 for lon in crossing)
    # the model gets lon=+-180.00 there (one meridian), nothing breaks
    tok = __import__("terramind_openeo.model.tokenizers", fromlist=["load_tokenizer"]).load_tokenizer("coords",
                                                                                                        "random")
    texts = tok.texts(torch.tensor(list(centres.values()), dtype=torch.float64))
    assert any("lon=180.00" in t or "lon=-180.00" in t for t in texts)


@pytest.mark.parametrize("crs, pole", [("EPSG:3413", 90.0), ("EPSG:3031", -90.0)])
def test_tiles_beyond_85_degrees_and_at_the_poles(crs, pole):
    """Polar stereographic cubes around the pole: latitudes as transformed (beyond 85 degrees too); where the
    latitude rounds to the pole the longitude is 0 (every meridian meets there)."""
    cube = _cube_at(crs, -2235.0, 2235.0)  # 448 px centred on the pole
    _, centres = _centres(cube, {"tile_anchor": "cube", "overlap": 0})
    true_lons = set()
    for (row, col), (lon, lat) in centres.items():
        cx, cy = cube.x.values[0] + (col + 111.5) * 10, cube.y.values[0] - (row + 111.5) * 10
        true_lon, true_lat = _to_wgs84(crs, cx, cy)
        assert lat == pytest.approx(true_lat, abs=1e-9) and abs(lat) >= POLE_LATITUDE
        assert lon == 0.0
        true_lons.add(round(true_lon))
    assert len(true_lons) == 4  # pyproj's own longitudes there: one per quadrant, meaningless
    far = _cube_at(crs, -2235.0, np.sign(pole) * -480000.0)  # ~ 85.7 degrees
    _, centres = _centres(far, {"tile_anchor": "cube", "overlap": 0})
    for (row, col), (lon, lat) in centres.items():
        cx, cy = far.x.values[0] + (col + 111.5) * 10, far.y.values[0] - (row + 111.5) * 10
        assert 85 < abs(lat) < POLE_LATITUDE
        np.testing.assert_allclose((lon, lat), _to_wgs84(crs, cx, cy), atol=1e-9)


def test_bad_cubes_name_the_coords_key():
    cube = make_synthetic_cube().isel(t=0)
    bare = xr.DataArray(cube.values, dims=cube.dims, coords={k: cube[k].values for k in ("bands", "y", "x")})
    with pytest.raises(ContextError, match="'coords': the cube has no CRS"):
        embed_cube(bare, {**TINY, "coords": True})
    irregular = cube.assign_coords(x=cube.x.values + np.r_[0, np.cumsum(np.arange(cube.sizes["x"] - 1) % 3)])
    with pytest.raises(ContextError, match="'coords': .*not regular"):
        embed_cube(irregular, {**TINY, "coords": True})
    outside = _cube_at("EPSG:3035", 4e7, 4e7, size=32)
    with pytest.raises(ContextError, match="'coords': the centre .* of tile .* lies outside"):
        embed_cube(outside, {**TINY, "coords": True, "tile_size": 32, "overlap": 0})
    with pytest.raises(ContextError, match="'coords': expected true or false"):
        validate_context("embed", {"coords": "yes"})
    with pytest.raises(ContextError, match="'coords': the location cannot be both an input"):
        validate_context("generate", {"coords": True, "target": "coords"})
    with pytest.raises(ContextError, match="'tim'"):
        validate_context("embed", {"tim": ["coords"]})


# ------------------------------------------------------------------------------------- coords as input


def test_embeddings_see_the_tokenised_tile_centre(terramind_examples, monkeypatch):
    """With coords: true the encoder gets the coords ids of each tile's centre (the tokenizer of the model's
    weights: 'random' here), and the embeddings change."""
    from terramind_openeo.inference.cache import MODEL_CACHE
    from terramind_openeo.model.tokenizers import load_tokenizer

    cube = example_cube(terramind_examples, ["S2L2A"], site=SITES[1])
    context = {**TINY, "tile_anchor": "cube", "overlap": 0}
    model = MODEL_CACHE.get("terramind_v1_tiny", "random", torch.device("cpu"), torch.float32)
    seen = []
    encode = model.encode

    def spy(inputs, *args, **kwargs):
        seen.append({k: v.clone() for k, v in inputs.items()})
        return encode(inputs, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    with_coords = embed_cube(cube, {**context, "coords": True}, model=model)
    without = embed_cube(cube, context, model=model)
    _, centres = _centres(cube, context)
    expected = load_tokenizer("coords", "random").encode(torch.tensor([centres[(0, 0)]], dtype=torch.float64))
    assert torch.equal(seen[0]["coords"], expected) and "coords" not in seen[1]
    assert with_coords.shape == without.shape == (192, 14, 14)
    assert float(np.abs(with_coords.values - without.values).max()) > 1e-3


# ------------------------------------------------------------------------------------ coords as target


class LocatingModel(PatchModel):
    """Stand-in: LULC/NDVI as PatchModel; coords a function of the tile's pixels (so tiles differ)."""

    def generate(self, inputs, targets, seed=None, **options):
        out = super().generate(inputs, [t for t in targets if t != "coords"], seed, **options)
        if "coords" in targets:
            x = inputs["S2L2A"].float()
            out["coords"] = torch.stack([x[:, 0].mean(dim=(1, 2)) * 10, x[:, 1].mean(dim=(1, 2))], dim=1)
        return out


def _expected_planes(values: dict, tile: int, scale: int, row0: int, col0: int, h: int, w: int) -> np.ndarray:
    """Independent of inference.geo: every cell takes the tile whose centre is nearest the cell's centre (ties:
    the later tile), one axis at a time (the tiles form a regular grid)."""
    rows = sorted({r for r, _ in values})
    cols = sorted({c for _, c in values})
    out = np.full((2, h, w), np.nan, dtype=np.float32)
    for i in range(h):
        for j in range(w):
            cy, cx = (row0 + i) * scale + scale / 2, (col0 + j) * scale + scale / 2
            r = min(rows, key=lambda o: (abs(o + tile / 2 - cy), -o))
            c = min(cols, key=lambda o: (abs(o + tile / 2 - cx), -o))
            out[:, i, j] = values[(r, c)]
    return out


@pytest.mark.parametrize("targets", [["coords"], ["NDVI", "coords"]])
def test_coords_target_one_value_per_tile(targets):
    cube = make_synthetic_cube()  # 2 dates, 200 x 184 px, UTM 32N
    context = {**TINY, "target": targets, "tile_size": 64, "overlap": 16, "seed": None}
    result, located, plan = runner._generate(cube, context, LocatingModel(), None, False, False)
    scale = 16 if targets == ["coords"] else 1
    assert list(result.bands.values) == output_bands("generate", context) == \
        (["lon", "lat"] if scale == 16 else ["NDVI", "lon", "lat"])
    assert result.dtype == np.float32 and result.rio.crs.to_epsg() == 32632
    assert len(located) == 2 * len(plan.grid.row_origins) * len(plan.grid.col_origins)
    grid = plan.grid
    h, w = result.sizes["y"], result.sizes["x"]
    if scale == 16:  # patch grid: 16 px cells, coordinates at the patch centres
        r0, c0 = grid.row0, grid.col0  # every 16 px patch of the CRS-anchored grid that meets the cube
        assert (h, w) == ((r0 + 199) // 16 - r0 // 16 + 1, (c0 + 183) // 16 - c0 // 16 + 1)
        assert float(result.x[1] - result.x[0]) == 160.0
        assert float(result.x[0]) == pytest.approx(float(cube.x[0]) + (c0 // 16 * 16 + 8 - c0 - 0.5) * 10)
    for date in range(2):
        values = {(t.row, t.col): v for t, v in located.items() if t.date == date}
        expected = _expected_planes(values, grid.tile_size, scale, grid.row0 // scale, grid.col0 // scale, h, w)
        got = result.isel(t=date).sel(bands=["lon", "lat"]).values
        np.testing.assert_array_equal(got, expected)
        # each value is the tile's own (LocatingModel: band-0 mean x 10, band-1 mean of its standardised pixels)
        assert len(np.unique(got[0])) == len(values)


def test_coords_target_nan_where_no_data_and_unread():
    cube = make_synthetic_cube().isel(t=0).copy()
    cube[:, :, :100] = np.nan  # the left columns hold no data
    context = {**TINY, "target": "coords", "tile_size": 64, "overlap": 0, "tile_anchor": "cube"}
    result = generate_cube(cube, context, model=LocatingModel())
    assert bool(np.isnan(result.values[:, :, :6]).all())  # patches 0..5 lie in the no-data columns
    assert bool(np.isfinite(result.values[:, :, 7:]).all())

    class Unreadable(LocatingModel):
        def generate(self, inputs, targets, seed=None, **options):
            out = super().generate(inputs, targets, seed, **options)
            out["coords"][:] = float("nan")  # what generation returns for text that is no location
            return out

    stats = runner.RunStats()
    result = generate_cube(cube, context, model=Unreadable(), stats=stats)
    assert bool(np.isnan(result.values).all()) and stats.extra["coords_unread_tiles"] > 0


def test_coords_target_with_the_tiny_model_on_a_real_tile(terramind_examples):
    """The real model end to end (random weights: the generated text reads as no location, so NaN)."""
    cube = example_cube(terramind_examples, ["S2L2A"])
    result = generate_cube(cube, {**TINY, "target": "coords", "tile_anchor": "cube", "overlap": 0, "argmax": True})
    assert result.shape == (2, 14, 14) and list(result.bands.values) == ["lon", "lat"]
    assert result.rio.crs == cube.rio.crs


def test_locate_tiles_as_geojson():
    cube = make_synthetic_cube()
    context = {**TINY, "tile_size": 64, "overlap": 16}
    collection = locate_tiles(cube, context, model=LocatingModel())
    assert collection["type"] == "FeatureCollection"
    plan = runner._plan("generate", cube, {**context, "target": "coords"})
    features = collection["features"]
    assert len(features) == len(plan.tiles)
    centres = __import__("terramind_openeo.inference.geo", fromlist=["tile_centres"]).tile_centres(
        cube, plan.grid, plan.tiles)
    first = features[0]
    props = first["properties"]
    assert props["t"] == "2022-06-01T00:00:00" and first["geometry"]["type"] == "Point"
    assert first["geometry"]["coordinates"] == [props["lon"], props["lat"]]
    assert (props["centre_lon"], props["centre_lat"]) == centres[(props["tile_row"], props["tile_col"])]
    assert 0 < props["error_km"] < 20000
    bare = xr.DataArray(cube.values, dims=cube.dims, coords={k: cube[k].values for k in cube.dims})
    plain = locate_tiles(bare, context, model=LocatingModel())["features"][0]["properties"]
    assert "centre_lon" not in plain and plain["lon"] == props["lon"]
    with pytest.raises(ContextError, match="'target': locate_tiles generates the location"):
        locate_tiles(cube, {**context, "target": "LULC"}, model=LocatingModel())
