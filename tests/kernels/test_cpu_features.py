"""The CPU capability check (kernels/cpu_features.py): read once, consistent with torch, forceable in tests."""

from __future__ import annotations

import threading

import pytest
import torch

from terramind_openeo.kernels import cpu_features
from terramind_openeo.kernels.cpu_features import PRESETS, CpuFeatures


def test_detected_cpu_agrees_with_torch():
    found = cpu_features.detect()
    assert found is cpu_features.detect()  # read once
    assert found.capability == torch.backends.cpu.get_cpu_capability()
    assert found.source == "detected"
    if hasattr(torch.cpu, "_is_avx2_supported"):
        assert ("avx2" in found.flags) == torch.cpu._is_avx2_supported()
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        assert found.has("avx512_bf16") == torch.cpu._is_avx512_bf16_supported()
    if hasattr(torch.cpu, "_is_amx_tile_supported"):
        assert found.has("amx_bf16") <= torch.cpu._is_amx_tile_supported()
    assert found.capability in found.describe()


@pytest.mark.parametrize("name,onednn_bf16,bf16_fast,int8_fast", [
    ("avx2", False, False, False), ("avx512", True, False, True), ("amx", True, True, True)])
def test_presets_and_what_they_allow(name, onednn_bf16, bf16_fast, int8_fast):
    cpu = PRESETS[name]
    assert (cpu.onednn_bf16, cpu.bf16_fast, cpu.int8_fast) == (onednn_bf16, bf16_fast, int8_fast)
    assert (cpu.missing("bf16") == "") == bf16_fast and (cpu.missing("int8") == "") == int8_fast
    with pytest.raises(ValueError, match="bf16"):
        cpu.missing("fp8")


def test_avx2_names_what_is_missing():
    text = PRESETS["avx2"].describe()
    assert "AVX2" in text and "AMX-BF16" in text and "AVX512-BF16" in text and "VNNI" in text
    assert PRESETS["amx"].describe().count("in hardware") == 2


def test_avx_ne_convert_alone_runs_onednn_bf16_but_not_fast_bf16():
    """Intel client CPUs (Lunar/Arrow Lake): no AVX-512, but oneDNN's bf16 conversions run."""
    cpu = CpuFeatures(frozenset({"avx2", "avx_vnni", "avx_ne_convert"}), "AVX2")
    assert cpu.onednn_bf16 and not cpu.bf16_fast and cpu.int8_fast


def test_forced_is_process_wide_nests_and_restores():
    real = cpu_features.detect()
    seen = []
    with cpu_features.forced("amx") as amx:
        assert cpu_features.current() is amx and amx.source == "forced: amx"
        worker = threading.Thread(target=lambda: seen.append(cpu_features.current()))
        worker.start()
        worker.join()
        with cpu_features.forced(CpuFeatures(frozenset({"avx2"}), "AVX2")) as inner:
            assert cpu_features.current() is inner and inner.source == "forced"
        assert cpu_features.current() is amx
    assert seen == [PRESETS["amx"]]
    assert cpu_features.current() is real
    with pytest.raises(ValueError, match="avx2, avx512, amx"), cpu_features.forced("zen9"):
        pass
    assert cpu_features.current() is real


def test_flags_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
                    "processor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_features._flags_from_proc(info) == frozenset({"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"})
    assert cpu_features._flags_from_proc(tmp_path / "absent") is None
    info.write_text("Features\t: fp asimd\n")  # an ARM CPU: no x86 flags line
    assert cpu_features._flags_from_proc(info) is None


def test_flags_from_torch_where_there_is_no_proc_cpuinfo(monkeypatch):
    for name in ("avx2", "avx512", "avx512_bf16", "vnni", "amx_tile"):
        monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda: True, raising=False)
    cpu = CpuFeatures(cpu_features._flags_from_torch(), "AVX512")
    assert cpu.onednn_bf16 and cpu.bf16_fast and cpu.int8_fast
    for name in ("avx512", "avx512_bf16", "vnni", "amx_tile"):
        monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda: False, raising=False)
    cpu = CpuFeatures(cpu_features._flags_from_torch(), "AVX2")
    assert cpu.has("avx2") and not (cpu.onednn_bf16 or cpu.bf16_fast or cpu.int8_fast)
