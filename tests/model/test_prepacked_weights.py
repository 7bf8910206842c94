"""Pre-packed CPU weights (kernels/prepack.py) in the model: on by default, used, and the same numbers as
plain F.linear / F.conv2d (bit-identical on the project's CPU; the test allows float rounding). (Parity with the reference, with packing on, is what the equivalence tests check.)"""

from __future__ import annotations

import pytest
import torch

from terramind_openeo.kernels import prepack
from terramind_openeo.model import load_terramind
from terramind_openeo.model.tokenizers import load_tokenizer

pytestmark = pytest.mark.skipif(not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()),
                                reason="torch built without MKL / oneDNN")


@pytest.fixture(autouse=True)
def _room(configured):
    """An empty cache with room for the module under test (others may have filled the budget)."""
    prepack.release()
    configured(prepack_mb=4096)
    yield
    prepack.release()


def _unpacked(monkeypatch, fn):
    with prepack.disabled():
        return fn()


def test_encoder_and_decoder_linears_are_packed_and_equal(monkeypatch):
    model = load_terramind("terramind_v1_tiny", weights="random")
    x = {"S2L2A": torch.randn(2, 12, 64, 96, generator=torch.Generator().manual_seed(0))}
    plain = _unpacked(monkeypatch, lambda: (model.encode(x), model.decoder_logits(x, "LULC")))
    assert not prepack.is_packed(model.encoder[0].attn.qkv)
    packed = (model.encode(x), model.decoder_logits(x, "LULC"))
    for module in (model.encoder[0].attn.qkv, model.encoder[-1].mlp.fc2, model.decoder[0].cross_attn.kv,
                   model.decoder_proj_context, model.encoder_embeddings["untok_sen2l2a@224"].proj,
                   model.decoder_embeddings["tok_lulc@224"].to_logits):
        assert prepack.is_packed(module), module
    for a, b in zip(plain[0], packed[0]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[1], plain[1], rtol=1e-5, atol=1e-5)
    prepack.release(model)
    assert not any(prepack.is_packed(m) for m in model.modules())


def test_unet_convolutions_are_packed_and_equal(monkeypatch):
    tok = load_tokenizer("S1GRD", weights="random")
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 2, 32, 64, generator=gen)
    codes = tok.tokens_to_latent(torch.randint(0, 15360, (1, 2, 4), generator=gen))
    plain = _unpacked(monkeypatch, lambda: tok.denoise_step(sample, 499, codes))
    packed = tok.denoise_step(sample, 499, codes)
    convs = [m for m in tok.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(prepack.is_packed(m) for m in convs)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    prepack.release(tok)
