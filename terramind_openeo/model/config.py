"""Model sizes and modalities of TerraMind v1, as the reference implementation (terratorch 1.2) defines them.

``TerraMindConfig`` holds the architecture of one size; ``MODALITIES`` maps the user-facing modality names
(``S2L2A``, ``tok_LULC``...) to the key under which the checkpoint stores its embedding tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from terramind_openeo.model.errors import UnknownModalityError, UnknownModelError

MODEL_NAMES = ("terramind_v1_tiny", "terramind_v1_small", "terramind_v1_base", "terramind_v1_large")


@dataclass(frozen=True)
class TerraMindConfig:
    """Architecture of one TerraMind v1 size (all four share patch size, image size and modality tables)."""

    name: str
    """``terramind_v1_{size}``."""
    dim: int
    """Token width."""
    encoder_depth: int
    decoder_depth: int
    num_heads: int
    qkv_bias: bool
    """Bias on the q/k/v (and cross-attention q, kv) projections."""
    proj_bias: bool
    """Bias on the attention output projection."""
    mlp_bias: bool
    gated_mlp: bool
    """SwiGLU (SiLU, three bias-free linears, hidden 2/3 of ``mlp_ratio * dim``) instead of a GELU MLP."""
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: int = 224
    """Size the position tables were built for; other sizes resize them bicubically."""
    norm_eps: float = 1e-6

    @property
    def size(self) -> str:
        return self.name.rsplit("_", 1)[-1]

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        hidden = int(self.dim * self.mlp_ratio)
        return int(2 * hidden / 3) if self.gated_mlp else hidden

    @property
    def hub_repo(self) -> str:
        return f"ibm-esa-geospatial/TerraMind-1.0-{self.size}"

    @property
    def hub_filename(self) -> str:
        return f"TerraMind_v1_{self.size}.pt"


_GELU = dict(qkv_bias=True, proj_bias=True, mlp_bias=True, gated_mlp=False)
_SWIGLU = dict(qkv_bias=False, proj_bias=False, mlp_bias=False, gated_mlp=True)
CONFIGS: dict[str, TerraMindConfig] = {
    "terramind_v1_tiny": TerraMindConfig("terramind_v1_tiny", 192, 12, 4, 3, **_GELU),
    "terramind_v1_small": TerraMindConfig("terramind_v1_small", 384, 12, 6, 6, **_GELU),
    "terramind_v1_base": TerraMindConfig("terramind_v1_base", 768, 12, 12, 12, **_SWIGLU),
    "terramind_v1_large": TerraMindConfig("terramind_v1_large", 1024, 24, 24, 16, **_SWIGLU),
}


def get_config(name: str) -> TerraMindConfig:
    """The config of ``name``; raises :class:`UnknownModelError` listing the known names."""
    try:
        return CONFIGS[name]
    except (KeyError, TypeError):
        raise UnknownModelError(f"unknown TerraMind model {name!r}; expected one of {', '.join(MODEL_NAMES)}") from None


@dataclass(frozen=True)
class ModalitySpec:
    """One input or output modality and the checkpoint tables that serve it."""

    name: str
    """User-facing name: ``S2L2A`` (raw pixels) or ``tok_S2L2A`` (token ids)."""
    key: str
    """Key of its embedding module in the checkpoint (``untok_sen2l2a@224``, ``tok_sen2l2a@224``, ``coords``)."""
    kind: str
    """``raw`` (float pixels [B, C, H, W]), ``tokens`` (int ids [B, h, w]) or ``sequence`` (int ids [B, L])."""
    channels: int = 0
    """Channel count of a raw modality."""
    vocab_size: int = 0
    """Vocabulary of a token or sequence modality."""
    bands: tuple[str, ...] = field(default=())
    """Band order of a raw modality."""


_S2L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
_S2L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

RAW_MODALITIES: dict[str, ModalitySpec] = {
    "S2L2A": ModalitySpec("S2L2A", "untok_sen2l2a@224", "raw", 12, bands=_S2L2A_BANDS),
    "S2L1C": ModalitySpec("S2L1C", "untok_sen2l1c@224", "raw", 13, bands=_S2L1C_BANDS),
    "S2RGB": ModalitySpec("S2RGB", "untok_sen2rgb@224", "raw", 3, bands=("RED", "GREEN", "BLUE")),
    "S1GRD": ModalitySpec("S1GRD", "untok_sen1grd@224", "raw", 2, bands=("VV", "VH")),
    "S1RTC": ModalitySpec("S1RTC", "untok_sen1rtc@224", "raw", 2, bands=("VV", "VH")),
    "DEM": ModalitySpec("DEM", "untok_dem@224", "raw", 1, bands=("DEM",)),
}
# Tokenised modalities: encoder inputs under "tok_<NAME>" and decoder targets under "<NAME>".
TOKEN_MODALITIES: dict[str, ModalitySpec] = {
    name: ModalitySpec(f"tok_{name}", key, "tokens", vocab_size=vocab)
    for name, key, vocab in [
        ("S2L2A", "tok_sen2l2a@224", 15360),
        ("S1GRD", "tok_sen1grd@224", 15360),
        ("S1RTC", "tok_sen1rtc@224", 15360),
        ("DEM", "tok_dem@224", 15360),
        ("LULC", "tok_lulc@224", 4375),
        ("NDVI", "tok_ndvi@224", 15360),
    ]
}
COORDS = ModalitySpec("coords", "coords", "sequence", vocab_size=30000)
COORDS_MAX_LENGTH = 4
SEQUENCE_POS_TABLE = 512
"""The reference builds 512 1-D positions for sequences and (by slicing the wrong axis) keeps all of them."""

# Every input the encoder accepts, by user-facing name.
INPUT_MODALITIES: dict[str, ModalitySpec] = {
    **RAW_MODALITIES,
    **{spec.name: spec for spec in TOKEN_MODALITIES.values()},
    "coords": COORDS,
}
TARGET_MODALITIES: tuple[str, ...] = tuple(TOKEN_MODALITIES)
"""Names accepted by ``decoder_logits(..., target)``."""

# The module order of the official checkpoint (13 encoder, 7 decoder tables).
ENCODER_KEYS = tuple(s.key for s in RAW_MODALITIES.values()) + tuple(
    s.key for s in TOKEN_MODALITIES.values()) + (COORDS.key,)
DECODER_KEYS = tuple(s.key for s in TOKEN_MODALITIES.values()) + (COORDS.key,)


def input_spec(name: str) -> ModalitySpec:
    """Spec of an encoder input; raises :class:`UnknownModalityError` naming what is accepted."""
    spec = INPUT_MODALITIES.get(name)
    if spec is None:
        hint = ""
        if name in TOKEN_MODALITIES:
            hint = (f" ({name} has no raw-pixel embedding: tokenise it (load_tokenizer({name!r})) and pass the "
                    f"token ids as 'tok_{name}')")
        raise UnknownModalityError(
            f"unknown input modality {name!r}{hint}; expected one of {', '.join(INPUT_MODALITIES)}")
    return spec


def target_spec(name: str) -> ModalitySpec:
    """Spec of a decoder target; raises :class:`UnknownModalityError` naming what is accepted."""
    spec = TOKEN_MODALITIES.get(name.removeprefix("tok_") if isinstance(name, str) else name)
    if spec is None:
        raise UnknownModalityError(
            f"unknown target modality {name!r}; expected one of {', '.join(TARGET_MODALITIES)}")
    return spec
