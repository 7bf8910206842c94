"""``terramind_openeo.classes``: a class scheme read back from STAC classes (user code states them: checked) and
carried in what a UDF's ``apply_metadata`` returns."""

from __future__ import annotations

import pytest
from openeo.metadata import Band, BandDimension, CollectionMetadata, CubeMetadata, SpatialDimension

from terramind_openeo.classes import (
    CLASS_NODATA,
    CLASSES_ATTR,
    LULC_SCHEME,
    ClassScheme,
    declare_classes,
    declared_classes,
)

FLOOD = ClassScheme.from_names("class", ["Others", "Flood"])


def _metadata(bands: list[str]) -> CubeMetadata:
    return CubeMetadata(dimensions=[SpatialDimension(name="x", extent=[0, 1]),
                                    BandDimension(name="bands", bands=[Band(b) for b in bands])])


@pytest.mark.parametrize("scheme", [FLOOD, LULC_SCHEME, ClassScheme.from_names("class", ["a", "b"], nodata=None)])
def test_stac_classes_read_back_to_the_same_scheme(scheme):
    assert ClassScheme.from_stac(scheme.band, scheme.stac_classes()) == scheme


def test_stac_classes_without_colours_get_the_palette():
    scheme = ClassScheme.from_stac("c", [{"value": 3, "name": "water"}, {"value": 0, "title": "Land"}])
    assert [(c.value, c.title) for c in scheme.classes] == [(3, "water"), (0, "Land")] and scheme.nodata is None
    assert scheme.colour_of(0) != scheme.colour_of(3)


@pytest.mark.parametrize(("classes", "words"), [
    ("water", "list of 1..1024"),
    ([], "list of 1..1024"),
    ([{"value": i, "name": "x"} for i in range(1025)], "list of 1..1024"),
    ([{"value": True, "name": "x"}], "class 0: 'value' must be an integer"),
    ([{"value": -1, "name": "x"}], "class 0: 'value' must be an integer"),
    ([{"value": 1.5, "name": "x"}], "class 0: 'value' must be an integer"),
    (["x"], "class 0: 'value'"),
    ([{"value": 1, "name": "a"}, {"value": 1, "name": "b"}], "class 1: value 1 is given twice"),
    ([{"value": 1}], "class 0 (value 1): needs a 'title' or 'name'"),
    ([{"value": 1, "title": "x" * 201}], "needs a 'title' or 'name' of 1..200"),
    ([{"value": 1, "title": "x", "color_hint": "red"}], "'color_hint' must be six hex digits"),
    ([{"value": 1, "title": "x", "color_hint": 0xFF0000}], "'color_hint' must be six hex digits"),
    ([{"value": 1, "title": "x"}, {"value": 254, "name": "n", "nodata": True},
      {"value": 255, "name": "n", "nodata": True}], "class 2 (value 255): a second no-data entry"),
    ([{"value": 255, "name": "nodata", "nodata": True}], "no class besides no-data"),
])
def test_unusable_stac_classes_are_refused_naming_the_entry(classes, words):
    with pytest.raises(ValueError) as info:
        ClassScheme.from_stac("class", classes)
    assert words in str(info.value)


def test_declared_classes_travel_in_the_returned_metadata():
    meta = _metadata(["B02", "B03"]).rename_labels(dimension="bands", target=["class", "P_flood"])
    out = declare_classes(meta, FLOOD)
    assert out.band_names == ["class", "P_flood"] and out.dimension_names() == ["x", "bands"]
    band, classes = declared_classes(out)
    assert band == "class" and ClassScheme.from_stac(band, classes) == FLOOD
    assert out.get("summaries", "eo:bands")[1] == {"name": "P_flood"}  # STAC: classes on their band's object
    assert declare_classes(meta, None) is meta and declared_classes(meta) is None


def test_declaring_keeps_collection_metadata_and_ignores_bands_the_result_lacks():
    given = CollectionMetadata({"id": "S2", "summaries": {"platform": ["sentinel-2a"]}},
                               dimensions=[BandDimension(name="bands", bands=[Band("LULC")])])
    out = declare_classes(given, LULC_SCHEME)
    assert out.get("id") == "S2" and out.get("summaries", "platform") == ["sentinel-2a"]
    assert declared_classes(out)[1][-1] == {"value": CLASS_NODATA, "name": "nodata", "title": "No input data",
                                            "nodata": True}
    renamed = out.rename_labels(dimension="bands", target=["other"])  # the class band renamed away
    assert declared_classes(renamed) is None
    assert CLASSES_ATTR == "classification:classes"
