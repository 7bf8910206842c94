"""The bounded, locked cache of loaded objects (model/lru.py): the model cache and the tokenizer cache."""

from __future__ import annotations

import threading
import time

from terramind_openeo.model import generation
from terramind_openeo.model.lru import LoadedLRU


def test_least_recently_used_goes_first():
    loaded = []
    cache = LoadedLRU(lambda key: loaded.append(key) or key.upper(), max_size=2)
    assert [cache.lookup(k) for k in ("a", "b", "a", "c", "a", "b")] == ["A", "B", "A", "C", "A", "B"]
    assert loaded == ["a", "b", "c", "b"] and len(cache) == 2 and cache.loads == 4  # "b" was dropped for "c"


def test_one_load_per_key_under_concurrent_callers():
    loads = []

    def slow(key):
        loads.append(key)
        time.sleep(0.05)
        return object()

    cache = LoadedLRU(slow, max_size=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.lookup("tokenizer"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["tokenizer"] and len({id(r) for r in results}) == 1


def test_the_tokenizer_cache_is_bounded_by_its_setting(monkeypatch, configured):
    """It was an unbounded dict (~1.1 GB per diffusion tokenizer)."""
    monkeypatch.setattr(generation.TOKENIZER_CACHE, "loader", lambda key: key)
    generation.clear_tokenizer_cache()
    configured(tokenizer_cache_size=1)
    try:
        generation.get_tokenizer("DEM", "random", "cpu", None)
        generation.get_tokenizer("LULC", "random", "cpu", None)
        assert len(generation.TOKENIZER_CACHE) == 1
        configured(tokenizer_cache_size=3)
        for modality in ("DEM", "NDVI", "S2L2A", "S1GRD"):
            generation.get_tokenizer(modality, "random", "cpu", None)
        assert len(generation.TOKENIZER_CACHE) == 3
    finally:
        generation.clear_tokenizer_cache()
