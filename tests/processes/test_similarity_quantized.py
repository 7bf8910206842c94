"""terramind_similarity against a direct computation, and int8 embeddings: the round-trip error bound,
the terramind_embed process writing them, and predict/similarity reading them back."""

from __future__ import annotations

import numpy as np
import xarray as xr
from ml_helpers import CLASSES, CRS, RES, X0, Y0, D, embedding_cube, labelled_points

from terramind_openeo.inference import quantize


def test_quantize_round_trip_error_bound():
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.uniform(-3, 4, size=(1, 500))  # pixels of very different strength
    values = (rng.normal(size=(64, 500)) * scales).astype(np.float32)
    values[:, 7] = np.nan
    values[:, 8] = 0.0
    codes, scale = quantize.quantize(values, axis=0)
    assert codes.dtype == scale.dtype == np.int8
    back = quantize.dequantize(codes, scale, axis=0)
    assert np.isnan(back[:, 7]).all() and (codes[:, 7] == quantize.NODATA).all()
    assert (back[:, 8] == 0).all()
    ok = np.isfinite(values).all(axis=0)
    peak = np.abs(values[:, ok]).max(axis=0)
    err = np.abs(back[:, ok] - values[:, ok]).max(axis=0)
    assert (err <= 2 ** (1 / 8) / 254 * peak * (1 + 1e-5)).all()
    strong = ok & (np.abs(np.nan_to_num(values)).max(axis=0) > 0)
    assert (np.abs(codes[:, ok]) <= 127).all() and np.abs(codes[:, strong]).max(axis=0).min() >= 116  # range used
    b, v = back[:, strong].astype(np.float64), values[:, strong].astype(np.float64)
    cos = (b * v).sum(0) / np.linalg.norm(b, axis=0) / np.linalg.norm(v, axis=0)
    assert cos.min() > 0.9999


def test_similarity_equals_a_direct_computation():
    from terramind_openeo.processes.similarity import terramind_similarity

    cube = embedding_cube(chunk=16)
    values = cube.values
    points, rows, cols = labelled_points(3, seed=4)
    out = terramind_similarity(cube, points)
    assert out.dims == ("bands", "y", "x") and list(out.bands.values) == ["similarity"]
    assert out.data.npartitions == 9
    ref = values[:, rows, cols].astype(np.float64).mean(axis=1)
    flat = values.reshape(D, -1).astype(np.float64)
    expected = (ref @ flat) / np.linalg.norm(ref) / np.linalg.norm(flat, axis=0)
    np.testing.assert_allclose(out.values[0].ravel(), expected, atol=2e-6)
    # a polygon counts once, with the mean of its pixels
    w, e, n, s = X0 + RES * 9.5, X0 + RES * 11.5, Y0 - RES * 29.5, Y0 - RES * 31.5
    poly = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": CRS}}, "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [X0, Y0]}}]}
    ref = (values[:, 30:32, 10:12].reshape(D, -1).astype(np.float64).mean(axis=1) + values[:, 0, 0]) / 2
    expected = (ref @ flat) / np.linalg.norm(ref) / np.linalg.norm(flat, axis=0)
    np.testing.assert_allclose(terramind_similarity(cube, poly).values[0].ravel(), expected, atol=2e-6)


def quantized_cube(cube):
    values = cube.values
    codes, scale = quantize.quantize(values, axis=0)
    data = np.concatenate([codes, scale[None]], axis=0)
    out = xr.DataArray(data, dims=cube.dims, coords={"bands": list(cube.bands.values) + [quantize.SCALE_BAND],
                                                     "y": cube.y.values, "x": cube.x.values},
                       attrs={"nodata": quantize.NODATA}).rio.write_crs(CRS)
    return out.chunk({"bands": -1, "y": 16, "x": 16})


def test_predict_and_similarity_read_int8_embeddings_back():
    from terramind_openeo.processes.ml.fit import terramind_fit_class_knn
    from terramind_openeo.processes.ml.predict import predict_cube
    from terramind_openeo.processes.quantized import dequantized, is_quantized
    from terramind_openeo.processes.similarity import terramind_similarity
    from terramind_openeo.processes.zonal import aggregate_spatial

    cube = embedding_cube(chunk=None)
    q = quantized_cube(cube)
    assert is_quantized(q) and q.dtype == np.int8
    deq = dequantized(q)
    assert [str(b) for b in deq.bands.values] == [str(b) for b in cube.bands.values]
    points, _, _ = labelled_points(5)
    def mean(data, axis, **_):
        return np.nanmean(data, axis=axis)

    model = terramind_fit_class_knn(aggregate_spatial(q, points, mean), points, k=3)
    assert model.bands == tuple(str(b) for b in cube.bands.values)  # emb_scale is not a predictor
    from_int8 = predict_cube(q, model, "value", keep_bands=False).values
    np.testing.assert_array_equal(from_int8, model.predict_codes(deq.values.reshape(D, -1).T).reshape(from_int8.shape))
    float_model = terramind_fit_class_knn(aggregate_spatial(cube, points, mean), points, k=3)
    from_float = predict_cube(cube.chunk({"y": 16, "x": 16}), float_model, "value", keep_bands=False).values
    assert (from_int8 == from_float).mean() > 0.99  # int8 changes almost no decision
    sim_q = terramind_similarity(q, points).values[0]
    sim_f = terramind_similarity(cube.chunk({"y": 16, "x": 16}), points).values[0]
    # a cosine moves by at most the relative errors of its two vectors (the reference: a mean, smaller)
    rel = np.linalg.norm(deq.values - cube.values, axis=0) / np.linalg.norm(cube.values, axis=0)
    assert (np.abs(sim_q - sim_f) <= 2 * rel + 1e-6).all() and np.abs(sim_q - sim_f).max() < 0.01


def test_terramind_embed_writes_int8(terramind_examples, tmp_path):
    """The process on a real tile (tiny random weights): int8 codes and scales, within the error bound of
    the float32 result, a GTiff of Int8 that reads back to the same numbers."""
    import rasterio
    import rioxarray

    from terramind_openeo.processes.quantized import dequantized
    from terramind_openeo.processes.terramind import terramind_embed

    with rasterio.open(terramind_examples / "S2L2A/282D_485L_3_3.tif") as src:
        tr = src.transform
        values = src.read(window=((0, 64), (0, 64))).astype(np.float32)
        crs = src.crs
    bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    cube = xr.DataArray(values, dims=("bands", "y", "x"), coords={
        "bands": bands, "y": tr.f + tr.e * (np.arange(64) + 0.5), "x": tr.c + tr.a * (np.arange(64) + 0.5)})
    cube = cube.rio.write_crs(crs)
    ctx = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 32, "overlap": 0}
    q = terramind_embed(cube, quantize="int8", **ctx)
    f = terramind_embed(cube, **ctx)
    assert q.dtype == np.int8 and q.attrs["nodata"] == quantize.NODATA and str(q.bands.values[-1]) == "emb_scale"
    fv, dv = f.values, dequantized(q).values
    peak = np.abs(fv).max(axis=0)
    assert (np.abs(dv - fv).max(axis=0) <= 2 ** (1 / 8) / 254 * peak * (1 + 1e-5)).all()
    from terramind_openeo.processes.writers import write_gtiff

    path = write_gtiff(q, tmp_path, "q")[0]
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "int8" and src.count == 193 and src.nodata == quantize.NODATA
    back = rioxarray.open_rasterio(path).rename(band="bands").assign_coords(bands=[str(b) for b in q.bands.values])
    np.testing.assert_array_equal(dequantized(back).values, dv)
    assert CLASSES  # the helper module's constants are the ones above
