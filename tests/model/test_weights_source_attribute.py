"""``model.weights`` and ``model.seed`` say what the docstring of ``TerraMind`` promises."""

from __future__ import annotations

from terramind_openeo.model import TerraMind, load_terramind


def test_weights_attribute_as_documented(tmp_path):
    model = load_terramind("terramind_v1_tiny", weights="random", seed=3)
    assert model.weights == "random" and model.seed == 3
    assert '``"random"`` (its seed in' in TerraMind.__doc__ and "random(seed=" not in TerraMind.__doc__
    state = model.state_dict()
    again = load_terramind("terramind_v1_tiny", weights=state)
    assert again.weights == "state_dict" and again.seed is None
