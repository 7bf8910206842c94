"""Top-p filtering: the values-only fast path gives the reference's (full sort + scatter) mask in every case."""

import pytest
import torch

from terramind_openeo.model.sampling import (
    _nucleus_drop,
    _nucleus_drop_sorted,
    filter_logits,
)


def _cases():
    g = torch.Generator().manual_seed(0)
    yield "flat", 0.02 * torch.randn(64, 4375, generator=g)  # random weights: nearly uniform
    yield "peaked", 4 * torch.randn(64, 4375, generator=g)
    yield "ties", torch.randint(0, 6, (64, 300), generator=g).float()  # equal scores straddle the boundary
    with_inf = torch.randn(32, 500, generator=g)
    with_inf[:, ::3] = float("-inf")  # what top-k leaves behind
    yield "minus-inf", with_inf
    with_nan = torch.randn(8, 100, generator=g)
    with_nan[2, 7] = float("nan")
    yield "nan", with_nan


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.8, 0.999, 1.0])
@pytest.mark.parametrize("name, logits", list(_cases()), ids=[c[0] for c in _cases()])
def test_fast_nucleus_equals_full_sort(name, logits, top_p):
    assert torch.equal(_nucleus_drop(logits, top_p), _nucleus_drop_sorted(logits, top_p))


def test_ties_at_the_boundary_take_the_sorted_path():
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    # softmax ~ [0.71, 0.096 x3, 0.035]: the nucleus ends inside the run of equal scores
    want = _nucleus_drop_sorted(logits, 0.75)
    assert 0 < int((~want[0, 1:4]).sum()) < 3  # the reference keeps some of the tied tokens, not all
    assert torch.equal(_nucleus_drop(logits, 0.75), want)


def test_filter_logits_keeps_the_nucleus_and_at_least_one_token():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    out = filter_logits(logits, top_p=0.5)
    assert out[0, 1] == 5.0 and torch.isinf(out[0, [0, 2, 3]]).all()  # first token alone exceeds 0.5
    out = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isfinite(out[0, [1, 3]]).all() and torch.isinf(out[0, [0, 2]]).all()
    assert logits[0, 0] == 0.0  # not in place by default
