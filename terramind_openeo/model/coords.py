"""The coords modality of TerraMind: a tile's centre as a short WordPiece text, in and out.

TerraMind v1 reads and writes a location as the text ``lat=<deg> lon=<deg> [EOS]`` on a 0.25 degree grid,
tokenised by the WordPiece tokenizer published as ``ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords`` (file
``config.json``: a Hugging Face ``tokenizers`` JSON) in which each grid value (``lat=-12.25``, ``lon=3.50``) is
one token. ``load_tokenizer("coords", weights="hub" | "random" | PATH)`` returns a :class:`CoordsTokenizer`:

* ``encode(lonlat [B, 2]) -> ids [B, L]`` (int64; with the official file L = 3: lat, lon, [EOS]) as the reference
  (terratorch's ``CoordsTokenizer.encode``) does it: rounded by ``(x * 4).round() / 4`` in the input's dtype
  (ties to even), written with two decimals, tokenised with special tokens by the ``tokenizers`` library;
* ``decode(ids [B, L]) -> lonlat [B, 2]`` (float32) from generated sequences as generation returns them (the ids
  after the start sentinel, padded with ``[PAD]``): the first two tokens must read ``lat=<deg> lon=<deg>``;
  anything else is a :class:`CoordsDecodeError` naming the sequence (``try_decode``: NaN and the reasons).

Deliberate differences from the reference, each where the reference emits ``[UNK]`` pieces or a misread:

* a value that rounds to -0.0 is written ``0.00`` (the vocabulary has no ``-0.00``; the reference splits it into
  six ``[UNK]`` tokens and cannot batch it with others);
* ``lon=180.00`` and ``lon=-180.00`` name one meridian: if the vocabulary holds only one, it serves both;
* input that is not ``[B, 2]``, not finite or outside -180..180 / -90..90 is an error naming the batch item;
* decoding is strict (``lat=`` then ``lon=``, in range), where the reference accepts any two numbers.

``weights="random"`` builds a synthetic tokenizer in the same file format: the special tokens at the ids the
reference's generation code fixes, then every grid token. It is for tests and benchmarks with random model
weights; its ids are not the official file's.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from terramind_openeo.model.config import COORDS
from terramind_openeo.model.generation_errors import CoordsDecodeError, CoordsTokenizerError, CoordsValueError

logger = logging.getLogger(__name__)

GRID_STEP = 0.25
"""Degrees between grid values; encode rounds to it as the reference does."""
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]", "[S_2]")
"""The reference's special tokens, at ids 0..6 in its blank WordPiece."""
FIXED_IDS = {"[EOS]": 3, "[S_1]": 5, "[S_2]": 6}
"""Ids the reference's generation code hard-codes (``eos_id=3``, ``s1_id=5``, ``s1_id + 1``): a file that puts
these tokens elsewhere cannot drive TerraMind's coords generation."""
MAX_FILE_BYTES = 64 << 20
"""A coords tokenizer JSON is about a megabyte; a much larger file is something else."""


def grid_tokens() -> list[str]:
    """Every grid token: ``lat=-90.00`` .. ``lat=90.00`` then ``lon=-180.00`` .. ``lon=180.00`` (0.25 steps)."""
    return ([f"lat={i / 4:.2f}" for i in range(-360, 361)]
            + [f"lon={i / 4:.2f}" for i in range(-720, 721)])


def _tokenizers_lib():
    try:
        import tokenizers
    except ImportError as exc:  # a core dependency; the message says what to do where it is missing
        raise CoordsTokenizerError("the coords tokenizer needs the 'tokenizers' package (pip install "
                                   "'tokenizers>=0.19')") from exc
    return tokenizers


def synthetic_tokenizer_json() -> str:
    """A coords tokenizer in the official file format with synthetic ids (see the module docstring)."""
    lib = _tokenizers_lib()
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

    grid = grid_tokens()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(grid))}
    tok = lib.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, normalized=False) for t in grid])  # never split by the pre-tokenizer
    return tok.to_str()


class CoordsTokenizer:
    """Longitude/latitude <-> TerraMind coords token ids (see the module docstring).

    ``text_tokenizer``: the ``tokenizers.Tokenizer``; ``weights``: where it came from ("hub", "random" or a path).
    """

    modality = "coords"

    def __init__(self, text_tokenizer, weights: str, vocab_size: int = COORDS.vocab_size):
        self.text_tokenizer = text_tokenizer
        self.weights = weights
        self.vocab_size = vocab_size
        vocab = text_tokenizer.get_vocab(with_added_tokens=True)
        source = f"coords tokenizer {weights!r}"
        for token in ("[PAD]", "[UNK]"):
            if token not in vocab:
                raise CoordsTokenizerError(f"{source}: no {token} token; not TerraMind's coords tokenizer")
        for token, expected in FIXED_IDS.items():
            if vocab.get(token) != expected:
                raise CoordsTokenizerError(
                    f"{source}: token {token} has id {vocab.get(token)}, TerraMind's generation expects {expected}; "
                    "not TerraMind's coords tokenizer")
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.eos_id, self.start_id, self.end_id = (FIXED_IDS[t] for t in ("[EOS]", "[S_1]", "[S_2]"))
        # the reference's sentinels: every token that starts with "[S_" (generate.get_sentinel_to_id_mapping)
        self.sentinel_ids = frozenset(i for token, i in vocab.items() if token.startswith("[S_"))
        for probe in ("lat=0.00", "lon=0.00"):
            if vocab.get(probe) is None:
                raise CoordsTokenizerError(f"{source}: no grid token {probe!r}; not TerraMind's coords tokenizer "
                                           "(expected one token per 0.25 degree value)")
        # +-180 are one meridian: a side missing from the vocabulary borrows the other's token
        self._lon_alias = {}
        for side in (180.0, -180.0):
            if f"lon={side:.2f}" not in vocab and f"lon={-side:.2f}" in vocab:
                self._lon_alias[side] = -side
        too_big = [t for t in ("[PAD]", "lat=0.00", "lon=0.00") if vocab[t] >= vocab_size]
        if too_big:
            raise CoordsTokenizerError(f"{source}: ids of {too_big} reach the model's coords vocabulary of "
                                       f"{vocab_size}; not TerraMind's coords tokenizer")

    def __repr__(self) -> str:
        return f"CoordsTokenizer(weights={self.weights!r})"

    # ------------------------------------------------------------------ encode
    def texts(self, coords) -> list[str]:
        """The reference's text for each ``[lon, lat]`` row after grid rounding (see the module docstring)."""
        x = _check_lonlat(coords)
        q = (x * 4).round() / 4  # the reference's rounding, in the input's dtype
        return [self._text(lon, lat) for lon, lat in q.tolist()]

    def _text(self, lon: float, lat: float) -> str:
        lat, lon = lat + 0.0, lon + 0.0  # -0.0 + 0.0 == +0.0: "0.00", never "-0.00"
        lon = self._lon_alias.get(lon, lon)
        return f"lat={lat:.2f} lon={lon:.2f} [EOS]"

    def encode(self, coords, device: torch.device | str | None = None) -> torch.Tensor:
        """``[B, 2]`` longitude, latitude (degrees, WGS84) -> token ids ``[B, L]`` int64 on ``device``."""
        texts = self.texts(coords)
        rows = [enc.ids for enc in self.text_tokenizer.encode_batch(texts, add_special_tokens=True)]
        for i, (text, ids) in enumerate(zip(texts, rows)):
            if self.unk_id in ids:
                raise CoordsValueError(f"coords[{i}]: {text!r} is not in the vocabulary of coords tokenizer "
                                       f"{self.weights!r} (it tokenises to {ids})")
            if max(ids) >= self.vocab_size:
                raise CoordsValueError(f"coords[{i}]: {text!r} tokenises to ids {ids} beyond the model's coords "
                                       f"vocabulary of {self.vocab_size}")
        if len({len(ids) for ids in rows}) > 1:
            raise CoordsValueError(f"coords tokenizer {self.weights!r} gives sequences of different lengths "
                                   f"{sorted({len(ids) for ids in rows})} for one batch")
        return torch.tensor(rows, dtype=torch.int64, device=device)

    # ------------------------------------------------------------------ decode
    def generated_span(self, sequence: Sequence[int]) -> list[int]:
        """The reference's merge of a generated sequence (4M span masking): the tokens that follow the start
        sentinel ``[S_1]``, up to the next sentinel; tokens after another sentinel are dropped."""
        span, current = [], None
        for token in sequence:
            token = int(token)
            if token in self.sentinel_ids:
                current = token
            elif current == self.start_id:
                span.append(token)
        return span

    def pad(self, spans: Sequence[Sequence[int]], device: torch.device | str | None = None) -> torch.Tensor:
        """Spans right-padded with ``[PAD]`` into ``[B, max length]`` int64 (the reference's merged tensor)."""
        width = max((len(s) for s in spans), default=0)
        rows = [list(s) + [self.pad_id] * (width - len(s)) for s in spans]
        return torch.tensor(rows, dtype=torch.int64, device=device).reshape(len(rows), width)

    def try_decode(self, ids) -> tuple[torch.Tensor, list[str]]:
        """``(lonlat [B, 2] float32 with NaN rows where a sequence does not parse, one reason per such row)``."""
        rows = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else [list(r) for r in ids]
        out = torch.full((len(rows), 2), float("nan"), dtype=torch.float32)
        problems = []
        for i, row in enumerate(rows):
            text = self.text_tokenizer.decode([int(t) for t in row[:2]], skip_special_tokens=False)
            parsed = parse_coords_text(text)
            if isinstance(parsed, str):
                problems.append(f"sequence {i} (ids {row}) reads {text!r}: {parsed}")
            else:
                out[i, 0], out[i, 1] = parsed
        return out, problems

    def decode(self, ids) -> torch.Tensor:
        """Generated sequences ``[B, L]`` -> ``[B, 2]`` longitude, latitude (float32); raises
        :class:`CoordsDecodeError` naming every sequence that does not parse."""
        out, problems = self.try_decode(ids)
        if problems:
            raise CoordsDecodeError("generated coords do not parse as 'lat=<deg> lon=<deg>': " + "; ".join(problems))
        return out


def parse_coords_text(text: str) -> tuple[float, float] | str:
    """``(lon, lat)`` from ``"lat=<deg> lon=<deg>"``, or the reason it does not parse."""
    parts = text.split(" ")
    if len(parts) != 2:
        return f"expected two words, got {len(parts)}"
    values = []
    for part, key, limit in ((parts[0], "lat=", 90.0), (parts[1], "lon=", 180.0)):
        if not part.startswith(key):
            return f"{part!r} does not start with {key!r}"
        try:
            value = float(part[len(key):])
        except ValueError:
            return f"{part!r} holds no number"
        if not math.isfinite(value) or abs(value) > limit:
            return f"{part!r} lies outside -{limit:g}..{limit:g}"
        values.append(value)
    lat, lon = values
    return lon, lat


def _check_lonlat(coords) -> torch.Tensor:
    """``coords`` as a float tensor ``[B, 2]`` (lon, lat), finite and in range; errors name the batch item."""
    if isinstance(coords, np.ndarray):
        coords = torch.from_numpy(coords)
    if not isinstance(coords, torch.Tensor):
        try:
            coords = torch.as_tensor(coords, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CoordsValueError(f"coords must be numbers [B, 2] (lon, lat), got {type(coords).__name__}") from exc
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise CoordsValueError(f"coords must have shape [B, 2] (lon, lat) with B >= 1, got {list(coords.shape)}")
    if not coords.is_floating_point():
        coords = coords.to(torch.float64)
    x = coords.detach().cpu()
    for i, (lon, lat) in enumerate(x.tolist()):
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise CoordsValueError(f"coords[{i}] = (lon {lon}, lat {lat}) is not finite")
        if abs(lon) > 180 or abs(lat) > 90:
            raise CoordsValueError(f"coords[{i}] = (lon {lon}, lat {lat}) lies outside lon -180..180, lat -90..90 "
                                   "(order is lon, lat)")
    return x


def coords_tokenizer_from_text(text: str, source: str) -> CoordsTokenizer:
    """Check that ``text`` is a WordPiece ``tokenizers`` JSON and build the tokenizer (errors name ``source``)."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoordsTokenizerError(f"coords tokenizer {source}: not a JSON file ({exc})") from exc
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict):
        raise CoordsTokenizerError(f"coords tokenizer {source}: a JSON file but not a 'tokenizers' file (no 'model' "
                                   "entry); expected TerraMind-1.0-Tokenizer-Coords/config.json")
    if model.get("type") != "WordPiece":
        raise CoordsTokenizerError(f"coords tokenizer {source}: a {model.get('type')!r} tokenizer; TerraMind's "
                                   "coords tokenizer is a WordPiece tokenizer")
    lib = _tokenizers_lib()
    try:
        tok = lib.Tokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises plain Exceptions for malformed files
        raise CoordsTokenizerError(f"coords tokenizer {source}: the tokenizers library cannot read it: {exc}") from exc
    return CoordsTokenizer(tok, source)


def read_coords_tokenizer(path: str | os.PathLike, source: str | None = None) -> CoordsTokenizer:
    """The coords tokenizer of a ``tokenizers`` JSON file; a file of another kind is an error naming it."""
    path = Path(path)
    source = source or str(path)
    if not path.is_file():
        raise CoordsTokenizerError(f"coords tokenizer: no file at {str(path)!r} (expected 'hub', 'random' or the "
                                   "path of a tokenizers JSON such as TerraMind-1.0-Tokenizer-Coords/config.json)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CoordsTokenizerError(f"coords tokenizer {str(path)!r}: {path.stat().st_size} bytes, far more than a "
                                   "tokenizers JSON holds; not a coords tokenizer")
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80":
        raise CoordsTokenizerError(f"coords tokenizer {str(path)!r}: a torch checkpoint (the image tokenizers' "
                                   ".pt format), not a tokenizers JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CoordsTokenizerError(f"coords tokenizer {str(path)!r}: not a UTF-8 text (JSON) file") from exc
    return coords_tokenizer_from_text(text, source)


def load_coords_tokenizer(weights: str | os.PathLike = "hub") -> CoordsTokenizer:
    """``"hub"`` (the official file, cached; ``HF_HUB_OFFLINE`` honoured), ``"random"`` (synthetic ids, warned)
    or a path to a ``tokenizers`` JSON file."""
    if isinstance(weights, str) and weights == "random":
        logger.warning("load_tokenizer('coords', weights='random'): a synthetic vocabulary, for tests and "
                       "benchmarks only (its ids are not the official tokenizer's)")
        return coords_tokenizer_from_text(synthetic_tokenizer_json(), "random")
    if isinstance(weights, str) and weights == "hub":
        from terramind_openeo.model.tokenizers import hub_checkpoint

        return read_coords_tokenizer(hub_checkpoint("coords"), source="hub")
    if not isinstance(weights, (str, os.PathLike)):
        raise CoordsTokenizerError(f"weights for the coords tokenizer must be 'hub', 'random' or a path, got "
                                   f"{type(weights).__name__}")
    return read_coords_tokenizer(weights)
