"""The holomorphic kernel against scipy.signal.hilbert in float64, on the CPU (and the GPU where one is)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.holomorphic import relative_errors, sample_frames
from elitemon.bench.holomorphic import CpuHolomorphic, gpu_unavailable_reason, make_processor, reference

GPU_MISSING = gpu_unavailable_reason()


@pytest.mark.parametrize("n", [4096, 1024, 6])
@pytest.mark.parametrize("workers", [1, 2])
def test_cpu_matches_scipy_hilbert_in_float64(n: int, workers: int) -> None:
    processor = CpuHolomorphic(n, 40, workers=workers)
    for name, frames in sample_frames(40, n, seed=n + workers).items():
        errors = relative_errors(processor.process(frames), reference(frames))
        assert max(errors.values()) < 1e-5, (name, errors)


def test_a_short_batch_after_a_long_one_sees_none_of_the_long_ones_frames() -> None:
    """The per-thread FFT buffers are reused across batches, and a short batch fills only part of
    them: its results must come from its own rows alone."""
    processor = CpuHolomorphic(4096, 40, workers=2)
    long, short = (sample_frames(count, 4096, seed=count)["chirp"] for count in (40, 3))
    processor.process(long)
    errors = relative_errors(processor.process(short), reference(short))
    assert max(errors.values()) < 1e-5, errors


def test_outputs_have_the_documented_types_and_shapes() -> None:
    frames = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    result = CpuHolomorphic(64, 8).process(frames)
    assert result.signal.dtype == np.complex64 and result.signal.shape == (5, 64)
    assert result.envelope.dtype == np.float32 and result.frequency.dtype == np.float32
    np.testing.assert_array_equal(result.signal.real, frames)  # the real part is the input itself
    assert result.frequency[0, 0] == result.frequency[0, 1]


def test_a_pure_tone_has_a_flat_envelope_and_its_own_frequency() -> None:
    n, cycles = 1024, 64  # a whole number of cycles per frame: no leakage, an exact analytic signal
    t = np.arange(n)
    frames = (2.5 * np.cos(2 * np.pi * cycles * t / n))[None].astype(np.float32)
    result = CpuHolomorphic(n, 1).process(frames)
    np.testing.assert_allclose(result.envelope, 2.5, rtol=1e-5)
    np.testing.assert_allclose(result.frequency, 2 * np.pi * cycles / n, rtol=1e-4)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 63), np.float32), "shape"),
        (np.zeros((2, 64), np.float64), "float32"),
        (np.zeros((9, 64), np.float32), "max_frames"),
        (np.zeros(64, np.float32), "shape"),
    ],
)
def test_bad_frames_are_refused_naming_the_problem(frames: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CpuHolomorphic(64, 8).process(frames)


def test_odd_frame_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="frame_size"):
        CpuHolomorphic(63)


def test_without_a_gpu_the_processor_is_the_cpu_one_and_says_why(caplog) -> None:
    if GPU_MISSING is None:
        pytest.skip("this machine has a GPU: the fallback is not taken")
    with caplog.at_level("WARNING"):
        processor = make_processor(64, 4)
    assert processor.backend == "cpu"
    assert "CPU" in caplog.text and GPU_MISSING in caplog.text
    with pytest.raises(RuntimeError, match="no GPU backend"):
        make_processor(64, 4, prefer="gpu")


@pytest.mark.skipif(GPU_MISSING is not None, reason=f"no GPU: {GPU_MISSING}")
def test_gpu_matches_scipy_hilbert_in_float64() -> None:
    import cupy as cp

    from elitemon.bench.holomorphic import GpuHolomorphic

    processor = GpuHolomorphic(4096, 40)
    for name, frames in sample_frames(40, 4096, seed=7).items():
        result = processor.process(cp.asarray(frames))
        got = type(result)(*(cp.asnumpy(part) for part in (result.signal, result.envelope, result.frequency)))
        errors = relative_errors(got, reference(frames))
        assert max(errors.values()) < 1e-5, (name, errors)


def test_the_kernel_imports_without_ray() -> None:
    """A bare GPU machine may have no Ray: the kernel and its benchmark must not need it."""
    import subprocess
    import sys

    code = "import sys, elitemon, elitemon.bench.holomorphic; assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
