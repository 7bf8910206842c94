"""The ml-model object that flows between ``fit_*``, ``save_ml_model``, ``load_ml_model`` and ``predict_*``.

An :class:`MLModel` holds a fitted scikit-learn estimator trained on integer class codes ``0..K-1`` (so the
estimator never sees user strings), the class labels those codes stand for, and the input band labels in
the order the estimator reads them. Prediction works on a plain ``[n, bands]`` float array; pixels with a
no-data value in any band get no-data out (openEO: "null if any of the given values is no-data").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = {
    "random_forest_classifier": "classification",
    "random_forest_regressor": "regression",
    "knn_classifier": "classification",
    "logistic_classifier": "classification",
}
"""Estimator kinds and their task (MLM ``mlm:tasks``)."""

ROWS_PER_CALL = 65536
"""Pixels handed to the estimator at once: bounds the temporaries (a float32 copy, per-class scores)."""


@dataclass
class MLModel:
    """A fitted model and what it needs to be applied to a cube."""

    kind: str
    estimator: Any
    bands: tuple[str, ...]
    """Input band labels, in the estimator's feature order."""
    classes: tuple | None = None
    """Class labels (numbers or strings) of codes 0..K-1; None for regression."""
    params: dict = field(default_factory=dict)
    """Hyper-parameters as the process got them (recorded in the MLM item)."""
    training: dict = field(default_factory=dict)
    """Facts about the training data (samples, samples per class)."""

    @property
    def task(self) -> str:
        return KINDS[self.kind]

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    def digest(self) -> str:
        """A content hash (of the saved form), for dask task names and the MLM item."""
        from terramind_openeo.processes.ml.safe_format import dump_model

        return hashlib.sha256(dump_model(self)).hexdigest()

    # ---------------------------------------------------------------- output coding of class maps
    def class_codes(self) -> tuple[np.ndarray, str, Any]:
        """``(value written for each class code, dtype, no-data)`` of a class map.

        Integer labels that fit in 0..254 are written as themselves (uint8, no-data 255); other integers
        as int32; fractional labels as float32 (NaN); text labels as their code 0..K-1 (uint8), named
        by ``class_names``."""
        labels = list(self.classes or ())
        if labels and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in labels):
            values = np.asarray(labels, dtype=np.int64)
            if values.min() >= 0 and values.max() <= 254:
                return values.astype(np.uint8), "uint8", 255
            return values.astype(np.int32), "int32", np.iinfo(np.int32).min
        if labels and all(isinstance(c, (int, float, np.number)) and not isinstance(c, bool) for c in labels):
            return np.asarray(labels, dtype=np.float32), "float32", float("nan")
        if len(labels) > 255:
            return np.arange(len(labels), dtype=np.int32), "int32", np.iinfo(np.int32).min
        return np.arange(len(labels), dtype=np.uint8), "uint8", 255

    def class_names(self) -> dict[int | float, str]:
        """Map value -> class name (the MLM item's ``classification:classes``)."""
        values, _, _ = self.class_codes()
        return {v.item(): str(label) for v, label in zip(values, self.classes or ())}

    def class_scheme(self, band: str):
        """The ``terramind_openeo.classes.ClassScheme`` of a class map in band ``band`` (names, default
        colours, no-data): the writers turn it into the COG colour table and STAC ``classification:classes``;
        None where the map is not integer classes in 0..254."""
        from terramind_openeo.classes import PALETTE, ClassInfo, ClassScheme

        values, dtype, nodata = self.class_codes()
        if dtype != "uint8":
            return None
        infos = tuple(ClassInfo(int(v), str(label), PALETTE[i % len(PALETTE)])
                      for i, (v, label) in enumerate(zip(values, self.classes or ())))
        return ClassScheme(band, infos, int(nodata))

    # ---------------------------------------------------------------- prediction on [n, bands] arrays
    def _rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.bands):
            raise ValueError(f"expected [n, {len(self.bands)}] values, got {values.shape}")
        valid = np.isfinite(values).all(axis=1)
        return values, valid

    def predict_codes(self, values: np.ndarray) -> np.ndarray:
        """Class codes 0..K-1 (int64, -1 for no-data) or regression values (float64, NaN)."""
        values, valid = self._rows(values)
        if self.is_classifier:
            out = np.full(values.shape[0], -1, dtype=np.int64)
        else:
            out = np.full(values.shape[0], np.nan, dtype=np.float64)
        return _on_valid_rows(self.estimator.predict, values, valid, out)

    def predict_proba(self, values: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, K]`` (float64, NaN rows for no-data)."""
        if not self.is_classifier:
            raise ValueError("a regression model has no class probabilities")
        values, valid = self._rows(values)
        out = np.full((values.shape[0], len(self.classes or ())), np.nan, dtype=np.float64)
        return _on_valid_rows(self.estimator.predict_proba, values, valid, out)

    def predict_labels(self, values: np.ndarray) -> np.ndarray:
        """Predicted labels as the user gave them (object array for classifiers; None for no-data)."""
        codes = self.predict_codes(values)
        if not self.is_classifier:
            return codes
        classes = list(self.classes or ())
        labels: np.ndarray = np.empty(len(classes) + 1, dtype=object)  # the last: no-data
        labels[:-1] = classes
        labels[-1] = None
        return labels[codes]


def _on_valid_rows(method, values: np.ndarray, valid: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` with ``method`` (an estimator's predict or predict_proba) applied to the ``valid`` rows of
    ``values``, at most ``ROWS_PER_CALL`` rows a call (bounded scratch memory); other rows keep their fill."""
    rows = np.flatnonzero(valid)
    for start in range(0, rows.size, ROWS_PER_CALL):
        pick = rows[start:start + ROWS_PER_CALL]
        out[pick] = method(values[pick])
    return out
