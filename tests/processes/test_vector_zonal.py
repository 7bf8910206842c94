"""Vector cubes and aggregate_spatial: the pixels each geometry covers, properties carried along, lazy
reads of only the blocks that hold geometries."""

from __future__ import annotations

import numpy as np
import pytest
from ml_helpers import CRS, RES, X0, Y0, embedding_cube, labelled_points, pixel_lonlat

from terramind_openeo.processes.errors import ProcessParameterInvalid


def mean(data, axis, **_):
    return np.nanmean(data, axis=axis)


def test_points_take_their_pixel_and_keep_their_properties():
    from terramind_openeo.processes.zonal import aggregate_spatial

    cube = embedding_cube()
    points, rows, cols = labelled_points(3)
    out = aggregate_spatial(cube, points, mean)
    assert out.dims == ("geometry", "bands") and out.sizes["geometry"] == 12
    np.testing.assert_array_equal(out.values, cube.values[:, rows, cols].T)
    assert list(out["target"].values) == [f["properties"]["target"] for f in points["features"]]
    assert list(out["id"].values) == list(range(12))
    assert out.xvec.to_geodataframe(name="v").crs.to_epsg() == 4326


def test_polygon_takes_the_pixels_whose_centres_it_contains():
    from terramind_openeo.processes.zonal import aggregate_spatial

    cube = embedding_cube()
    # a box from the left edge of column 3 to the middle of column 6 (centres of 3, 4, 5 inside), rows 10..12
    w, e = X0 + RES * 2.5, X0 + RES * 5.9
    n, s = Y0 - RES * 9.5, Y0 - RES * 12.4
    box = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
           "crs": {"type": "name", "properties": {"name": CRS}}}
    out = aggregate_spatial(cube, box, mean)
    expected = cube.values[:, 10:13, 3:6].reshape(16, -1).mean(axis=1)
    np.testing.assert_allclose(out.values[0], expected, rtol=1e-5, atol=1e-6)  # float32 sums, other order
    sd = aggregate_spatial(cube, box, lambda data, axis, **_: np.nanstd(data, axis=axis, ddof=1))
    np.testing.assert_allclose(sd.values[0], cube.values[:, 10:13, 3:6].reshape(16, -1).std(axis=1, ddof=1), rtol=1e-5)


def test_only_the_blocks_holding_geometries_are_read():
    from terramind_openeo.processes.zonal import aggregate_spatial

    reads = []
    cube = embedding_cube(chunk=16)

    def spy(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block

    spied = cube.copy(data=cube.data.map_blocks(spy, dtype=cube.dtype))
    lon, lat = pixel_lonlat(np.array([2, 3]), np.array([40, 41]))  # both in block (0, 2)
    points = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]}, "properties": {}}
        for x, y in zip(lon, lat)]}
    out = aggregate_spatial(spied, points, mean)
    assert reads == []  # lazy until computed
    assert out.values.shape == (2, 16)
    assert {loc[1:] for loc in reads} == {(0, 2)}


def test_points_outside_listed(tmp_path):
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(2)
    for i in (1, 6, 7):
        points["features"][i]["geometry"]["coordinates"][1] += 1.0  # a degree north: outside
    with pytest.raises(ProcessParameterInvalid, match=r"feature 1 and 2 more \(\[6, 7\]\)"):
        aggregate_spatial(embedding_cube(), points, mean)


def test_load_geojson_properties_dimension():
    from terramind_openeo.processes.vector import load_geojson

    points, _, _ = labelled_points(2)
    cube = load_geojson(points, properties=["target", "id"])
    assert cube.dims == ("geometry", "properties") and list(cube.properties.values) == ["target", "id"]
    assert cube.values[:, 0].tolist() == [f["properties"]["target"] for f in points["features"]]
    plain = load_geojson(points)
    assert plain.dims == ("geometry",) and list(plain["target"].values) == cube.values[:, 0].tolist()
    with pytest.raises(ProcessParameterInvalid, match=r"no feature has the property\(ies\) \['label'\]"):
        load_geojson(points, properties=["label"])


def test_target_from_load_geojson_and_from_the_carried_label():
    from terramind_openeo.processes.ml.fit import fit_class_random_forest
    from terramind_openeo.processes.vector import load_geojson
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(3)
    predictors = aggregate_spatial(embedding_cube(), points, mean)
    x = embedding_cube(chunk=None).values.reshape(16, -1).T
    ways = [points, load_geojson(points, properties=["target"]), load_geojson(points), predictors]
    maps = [fit_class_random_forest(predictors, t, num_trees=5, seed=1).predict_codes(x) for t in ways]
    for other in maps[1:]:
        np.testing.assert_array_equal(other, maps[0])


def test_load_url_parses_geojson_and_geoparquet(monkeypatch):
    import geopandas as gpd
    import shapely

    from terramind_openeo.errors import FormatUnsuitable
    from terramind_openeo.processes import remote
    from terramind_openeo.processes.vector import load_url

    points, _, _ = labelled_points(2)
    gdf = gpd.GeoDataFrame({"target": [f["properties"]["target"] for f in points["features"]]},
                           geometry=[shapely.geometry.shape(f["geometry"]) for f in points["features"]], crs=4326)
    import io

    buf = io.BytesIO()
    gdf.to_parquet(buf)
    payloads = {"https://example.org/p.parquet": buf.getvalue(),
                "https://example.org/p.geojson": __import__("json").dumps(points).encode(),
                "https://example.org/bad.parquet": b"not parquet"}
    monkeypatch.setattr(remote, "fetch_bytes", lambda url, max_bytes, argument: payloads[url])
    a = load_url("https://example.org/p.parquet", "Parquet")
    b = load_url("https://example.org/p.geojson", "GeoJSON")
    assert list(a["target"].values) == list(b["target"].values) == gdf["target"].tolist()
    with pytest.raises(FormatUnsuitable, match="not a GeoParquet file"):
        load_url("https://example.org/bad.parquet", "Parquet")
    with pytest.raises(FormatUnsuitable, match="format 'CSV' cannot be loaded"):
        load_url("https://example.org/p.csv", "CSV")


def test_limits_come_from_the_settings(configured):
    from terramind_openeo.processes.ml.safe_format import load_model
    from terramind_openeo.processes.vector import load_geojson
    from terramind_openeo.processes.zonal import aggregate_spatial

    points, _, _ = labelled_points(2)  # 8 features
    configured(vector_max_features=7, aggregate_max_pixels=7, ml_model_max_mb=0.0001)
    with pytest.raises(ProcessParameterInvalid, match=r"8 features exceed the limit of 7"):
        load_geojson(points)
    configured(vector_max_features=100)
    with pytest.raises(ProcessParameterInvalid, match=r"8 positions in all, over the limit of 7"):
        aggregate_spatial(embedding_cube(), points, mean)
    with pytest.raises(Exception, match=r"exceed the limit of 104"):
        load_model(b"PK\x03\x04" + b"0" * 200)
