"""``train.step.isolate_compile_cache``: one inductor kernel cache per device, ISA and thread count.

With torch 2.14 on CPU, inductor kernels cached by a run at one thread count and loaded by a run at another
corrupted the heap (abort), and kernels cached natively and loaded under an AVX2 cap gave NaN at step 0 or SIGSEGV;
with a folder per (ISA, threads) the same four runs trained (docs/BENCHMARKS.md, "torch.compile on CPU"). These
tests check the folder choice without compiling (a compile takes about a minute).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edge_encoder.train import step


def test_each_machine_key_gets_its_own_folder_inside_the_users_cache(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step, "_USER_INDUCTOR_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    one = step.isolate_compile_cache("cpu-avx512-1t")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(one) == str(tmp_path / "edge_encoder-cpu-avx512-1t")
    two = step.isolate_compile_cache("cpu-avx512-2t")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(two) and two != one and two.parent == tmp_path
    # a later run's key is taken from the user's folder again, not nested in the previous run's
    assert step.isolate_compile_cache("cpu-avx2-avx2-2t").parent == tmp_path


def test_without_a_user_folder_the_keys_live_in_torchs_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setattr(step, "_USER_INDUCTOR_CACHE", None)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")  # what torch writes back after a compile
    folder = step.isolate_compile_cache("cpu-avx2-1t")
    assert folder == Path(default_cache_dir()) / "edge_encoder-cpu-avx2-1t"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
