"""A coords tokenizer file in the official format (a ``tokenizers`` WordPiece JSON), written at test time.

Built here with the ``tokenizers`` library itself, independently of ``terramind_openeo.model.coords``: the special
tokens at the ids the reference's generation fixes ([EOS] 3, [S_1] 5, [S_2] 6), then every 0.25 degree grid
token (``lat=-90.00`` .. ``lon=180.00``, added so the pre-tokenizer never splits them), extra sentinel tokens
``[S_3]``.. and filler words, all shuffled over the model's 30000 ids. Sparse ids make a wrong id mapping
visible; the many sentinels make generated spans end early, so random weights give ragged spans in a batch.
"""

from __future__ import annotations

import random
from pathlib import Path

VOCAB = 30000
SPECIALS = ["[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]", "[S_2]"]


def grid() -> list[str]:
    return [f"lat={i / 4:.2f}" for i in range(-360, 361)] + [f"lon={i / 4:.2f}" for i in range(-720, 721)]


def write_coords_tokenizer(path: Path, seed: int = 0, sentinels: int = 4000, drop: tuple[str, ...] = ()) -> Path:
    """Write the tokenizer JSON to ``path``; ``drop``: grid tokens to leave out (a vocabulary that lacks them)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    rng = random.Random(seed)
    coords = [t for t in grid() if t not in drop]
    extra = [f"[S_{k}]" for k in range(3, 3 + sentinels)]
    words = [f"w{k}" for k in range(VOCAB - len(SPECIALS) - len(coords) - len(extra))]
    rest = coords + extra + words
    rng.shuffle(rest)
    vocab = {token: i for i, token in enumerate(SPECIALS + rest)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS + extra])
    tok.add_tokens([AddedToken(t, normalized=False) for t in coords])
    tok.save(str(path))
    return path
