"""``terramind-openeo encode`` on real tiles (random weights here; the README runs it with --weights hub)."""

from __future__ import annotations

import numpy as np
import pytest

from terramind_openeo.cli import main as cli_main

SITE = "282D_485L_3_3.tif"


def test_encode_real_tile_random_weights(terramind_examples, tmp_path, capsys):
    pytest.importorskip("rasterio")
    out = tmp_path / "emb.npy"
    rc = cli_main(["encode", str(terramind_examples / "S2L2A" / SITE), "--modality", "S2L2A",
                   "--model", "terramind_v1_tiny", "--weights", "random", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "embeddings: shape [196, 192]" in text
    assert np.load(out).shape == (196, 192)


def test_encode_two_modalities_from_folder_names(terramind_examples, capsys):
    pytest.importorskip("rasterio")
    rc = cli_main(["encode", str(terramind_examples / "S2L2A" / SITE), str(terramind_examples / "S1RTC" / SITE),
                   "--weights", "random", "--merge", "dict", "--layer", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "S2L2A: shape [196, 192]" in text and "S1RTC: shape [196, 192]" in text


def test_encode_wrong_modality_is_a_clear_error(terramind_examples, capsys):
    pytest.importorskip("rasterio")
    rc = cli_main(["encode", str(terramind_examples / "S1RTC" / SITE), "--modality", "S2L2A",
                   "--weights", "random"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "S2L2A" in err and "12 band" in err


def test_encode_missing_file(tmp_path, capsys):
    rc = cli_main(["encode", str(tmp_path / "x.tif"), "--modality", "DEM", "--weights", "random"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
