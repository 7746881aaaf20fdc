"""The holomorphic (analytic-signal) kernel, on the CPU (FFTW, Numba, NumPy) and on CuPy.

For each frame of N real samples x, the analytic signal z = x + i·H[x], with H the Hilbert
transform, and from it the envelope |z| and the instantaneous frequency (the phase increment per
sample, in radians). H is computed with two real FFTs rather than the textbook complex pair:

    X = rfft(x)                        (N/2 + 1 bins)
    Y[k] = -i·X[k] for 0 < k < N/2,  Y[0] = Y[N/2] = 0
    H[x] = irfft(Y, N)

which equals the imaginary part of `scipy.signal.hilbert(x)` (whose spectrum is X doubled on the
positive bins and zeroed on the negative ones) at half its FFT work. Then

    envelope[n]  = sqrt(x[n]² + h[n]²)
    frequency[n] = angle(z[n] · conj(z[n-1]))   for n ≥ 1;  frequency[0] = frequency[1]

Input float32 of shape (frames, N), N even; outputs complex64 z and float32 envelope and frequency,
written into buffers allocated once per processor (`max_frames` frames), so that a stream of
batches allocates nothing per batch. The CPU path splits the frames into cache-sized chunks and
runs them on `workers` threads, each with its own FFTW plans (FFTW, the Numba loops and NumPy's
ufuncs release the GIL). The GPU path uses cuFFT plans made once per shape, two fused elementwise
kernels (the Hilbert mask on the spectrum; then z, envelope and frequency in one pass), and for
host data two CUDA streams so that copies of one batch overlap the compute of the other.

`make_processor` picks the backend: CuPy with a GPU when both exist, the CPU otherwise (said once,
with the reason).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numba
import numpy as np

log = logging.getLogger(__name__)

#: Frames per CPU chunk: 16 frames of 4096 samples keep the chunk's intermediates (about 1.5 MiB)
#: in a core's L2 cache.
CPU_CHUNK_SAMPLES = 16 * 4096


@dataclass(frozen=True)
class Analytic:
    """One batch's results: views into the processor's buffers, valid until its next call."""

    signal: Any  # complex64 (frames, N): x + i·H[x]
    envelope: Any  # float32 (frames, N)
    frequency: Any  # float32 (frames, N), radians per sample


class Processor(Protocol):
    backend: str
    frame_size: int

    def process(self, frames: Any) -> Analytic: ...


def _check_frames(frames: Any, frame_size: int, max_frames: int) -> None:
    if frames.ndim != 2 or frames.shape[1] != frame_size:
        raise ValueError(f"frames: expected shape (n, {frame_size}), got {tuple(frames.shape)}")
    if frames.shape[0] > max_frames:
        raise ValueError(f"frames: {frames.shape[0]} frames exceed this processor's max_frames={max_frames}")
    if frames.dtype != np.float32:
        raise ValueError(f"frames: expected float32, got {frames.dtype}")


def _check_frame_size(frame_size: int) -> None:
    if frame_size < 4 or frame_size % 2:
        raise ValueError(f"frame_size: must be even and at least 4, got {frame_size}")


class CpuHolomorphic:
    """The kernel on FFTW (through pyFFTW), Numba and NumPy, over `workers` threads.

    Each thread owns a pair of FFTW plans for one chunk of `CPU_CHUNK_SAMPLES` and the aligned
    buffers they run on: a chunk is copied into the thread's input buffer, transformed there, and its
    outputs written to the processor's result buffers. FFTW runs these real transforms in about half
    the time of SciPy's pocketfft at N=4096; the elementwise work (mask; z, envelope and the products
    the frequency needs) is two compiled loops instead of a dozen NumPy passes; the arctan2 is
    NumPy's vectorised one. Plans are made once per processor (FFTW_MEASURE, reusing the process's
    wisdom for a shape it has planned before)."""

    backend = "cpu"

    def __init__(self, frame_size: int = 4096, max_frames: int = 1024, workers: int | None = None) -> None:
        _check_frame_size(frame_size)
        self.frame_size, self.max_frames = frame_size, max_frames
        self.workers = workers or os.cpu_count() or 1
        self._signal = np.empty((max_frames, frame_size), np.complex64)
        self._envelope = np.empty((max_frames, frame_size), np.float32)
        self._frequency = np.empty((max_frames, frame_size), np.float32)
        self._scale = np.float32(1.0 / frame_size)  # the inverse FFT's normalisation, applied by the mask
        self._chunk = max(1, min(max_frames, CPU_CHUNK_SAMPLES // frame_size))
        self._lanes = [_FftwLane(self._chunk, frame_size) for _ in range(self.workers)]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="holomorphic") if self.workers > 1 else None

    def process(self, frames: np.ndarray) -> Analytic:
        _check_frames(frames, self.frame_size, self.max_frames)
        n = frames.shape[0]
        spans = [(start, min(n, start + self._chunk)) for start in range(0, n, self._chunk)]
        if self._pool is None:
            for span in spans:
                self._chunk_of(self._lanes[0], frames, *span)
        else:
            # Lane i takes spans i, i + workers, ...: no two threads share a lane's buffers.
            lanes = range(min(self.workers, len(spans)))
            list(self._pool.map(lambda lane: self._spans_of(lane, frames, spans), lanes))
        return Analytic(self._signal[:n], self._envelope[:n], self._frequency[:n])

    def _spans_of(self, lane: int, frames: np.ndarray, spans: list[tuple[int, int]]) -> None:
        for span in spans[lane :: self.workers]:
            self._chunk_of(self._lanes[lane], frames, *span)

    def _chunk_of(self, lane: _FftwLane, frames: np.ndarray, start: int, stop: int) -> None:
        rows = stop - start
        x = lane.samples[:rows]
        x[...] = frames[start:stop]  # a short last chunk also transforms stale rows, which nothing reads
        lane.forward.execute()
        _hilbert_multiply(lane.spectrum, self._scale)
        lane.backward.execute()
        h = lane.hilbert[:rows]
        real, imag = lane.real[:rows], lane.imag[:rows]
        _signal_envelope_products(x, h, self._signal[start:stop], self._envelope[start:stop], real, imag)
        np.arctan2(imag, real, out=self._frequency[start:stop])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class _FftwLane:
    """One thread's FFTW plans and the aligned buffers they are bound to: samples → spectrum
    (real-to-complex) and spectrum → hilbert (complex-to-real, unnormalised: the 1/N is folded into
    the mask), plus the two products the frequency's arctan2 reads. The inverse may destroy the
    spectrum, which is rebuilt every chunk anyway."""

    def __init__(self, rows: int, frame_size: int) -> None:
        import pyfftw

        self.samples = pyfftw.empty_aligned((rows, frame_size), np.float32)
        self.spectrum = pyfftw.empty_aligned((rows, frame_size // 2 + 1), np.complex64)
        self.hilbert = pyfftw.empty_aligned((rows, frame_size), np.float32)
        self.real = np.empty((rows, frame_size), np.float32)
        self.imag = np.empty((rows, frame_size), np.float32)
        self.forward = pyfftw.FFTW(self.samples, self.spectrum, axes=(-1,), flags=("FFTW_MEASURE",), threads=1)
        self.backward = pyfftw.FFTW(
            self.spectrum,
            self.hilbert,
            axes=(-1,),
            direction="FFTW_BACKWARD",
            flags=("FFTW_MEASURE", "FFTW_DESTROY_INPUT"),
            threads=1,
        )


@numba.njit(nogil=True, cache=True)
def _hilbert_multiply(spectrum: np.ndarray, scale: np.float32) -> None:  # pragma: no cover (compiled)
    """The Hilbert transform's multiplier in place: −i·scale on the positive bins, 0 on DC and
    Nyquist; −i·(a + ib) = b − ia."""
    rows, bins = spectrum.shape
    for row in range(rows):
        for k in range(bins):
            value = spectrum[row, k]
            spectrum[row, k] = complex(value.imag * scale, -value.real * scale)
        spectrum[row, 0] = spectrum[row, bins - 1] = 0


@numba.njit(nogil=True, cache=True)
def _signal_envelope_products(
    x: np.ndarray, h: np.ndarray, signal: np.ndarray, envelope: np.ndarray, real: np.ndarray, imag: np.ndarray
) -> None:  # pragma: no cover (compiled; covered through CpuHolomorphic's tests)
    """One pass over a chunk instead of NumPy's dozen: z = x + i·h, |z|, and the real and imaginary
    parts of z[n]·conj(z[n−1]) = (x[n]x[n−1] + h[n]h[n−1]) + i(h[n]x[n−1] − x[n]h[n−1]), whose
    arctan2 (NumPy's, vectorised) is the frequency; column 0 repeats column 1 (frequency[0] is
    frequency[1]), so that the arctan2 runs over whole rows. Compiled once per machine (cached)."""
    rows, n = x.shape
    for row in range(rows):
        for i in range(n):
            xv, hv = x[row, i], h[row, i]
            signal[row, i] = complex(xv, hv)
            envelope[row, i] = np.sqrt(xv * xv + hv * hv)
        for i in range(1, n):
            real[row, i] = x[row, i] * x[row, i - 1] + h[row, i] * h[row, i - 1]
            imag[row, i] = h[row, i] * x[row, i - 1] - x[row, i] * h[row, i - 1]
        real[row, 0], imag[row, 0] = real[row, 1], imag[row, 1]


class GpuHolomorphic:
    """The kernel on CuPy: cuFFT plans per shape, fused elementwise kernels, preallocated buffers."""

    backend = "gpu"

    def __init__(self, frame_size: int = 4096, max_frames: int = 16384, device: int = 0) -> None:
        import cupy as cp
        from cupy.cuda import cufft

        _check_frame_size(frame_size)
        self._cp, self._cufft = cp, cufft
        self.frame_size, self.max_frames, self.device = frame_size, max_frames, device
        bins = frame_size // 2 + 1
        with cp.cuda.Device(device):
            self._spectrum = cp.empty((max_frames, bins), cp.complex64)
            self._h = cp.empty((max_frames, frame_size), cp.float32)
            self._signal = cp.empty((max_frames, frame_size), cp.complex64)
            self._envelope = cp.empty((max_frames, frame_size), cp.float32)
            self._frequency = cp.empty((max_frames, frame_size), cp.float32)
            self._frames = cp.empty((max_frames, frame_size), cp.float32)  # host batches land here
            self._streams = [cp.cuda.Stream(non_blocking=True) for _ in range(2)]
        # The inverse FFT is unnormalised: its 1/N is folded into the mask, which touches every bin anyway.
        self._mask = cp.ElementwiseKernel(
            "int32 bins, float32 scale",
            "complex64 spectrum",
            """
            const int k = i % bins;
            spectrum = (k == 0 || k == bins - 1) ? complex<float>(0.f, 0.f)
                : complex<float>(spectrum.imag() * scale, -spectrum.real() * scale);
            """,
            "elitemon_hilbert_mask",
        )
        self._outputs = cp.ElementwiseKernel(
            "raw float32 x, raw float32 h, int32 n",
            "complex64 signal, float32 envelope, float32 frequency",
            """
            const float xv = x[i], hv = h[i];
            signal = complex<float>(xv, hv);
            envelope = sqrtf(xv * xv + hv * hv);
            const int p = (i % n == 0) ? i + 1 : i;  // frequency[0] is frequency[1]
            const float xa = x[p - 1], ha = h[p - 1], xb = x[p], hb = h[p];
            frequency = atan2f(hb * xa - xb * ha, xb * xa + hb * ha);
            """,
            "elitemon_analytic_outputs",
        )
        self._plans: dict[tuple[int, int, int], Any] = {}

    def _plan(self, frames: int, fft_type: int, lane: int) -> Any:
        """One cuFFT plan per batch size, direction and stream: a plan's work area is not shareable
        between streams running at once."""
        key = (frames, fft_type, lane)
        if key not in self._plans:
            with self._cp.cuda.Device(self.device):
                self._plans[key] = self._cufft.Plan1d(self.frame_size, fft_type, frames)
        return self._plans[key]

    def process(self, frames: Any, *, lane: int = 0, offset: int = 0) -> Analytic:
        """Frames already on the device (a float32 CuPy array), on the current stream. Results go to
        rows `offset:offset + len(frames)` of the processor's buffers."""
        _check_frames(frames, self.frame_size, self.max_frames - offset)
        cufft, n = self._cufft, frames.shape[0]
        rows = slice(offset, offset + n)
        spectrum, h = self._spectrum[rows], self._h[rows]
        self._plan(n, cufft.CUFFT_R2C, lane).fft(frames, spectrum, cufft.CUFFT_FORWARD)
        self._mask(np.int32(self.frame_size // 2 + 1), np.float32(1.0 / self.frame_size), spectrum)
        self._plan(n, cufft.CUFFT_C2R, lane).fft(spectrum, h, cufft.CUFFT_INVERSE)
        signal, envelope, frequency = self._signal[rows], self._envelope[rows], self._frequency[rows]
        self._outputs(frames, h, np.int32(self.frame_size), signal, envelope, frequency)
        return Analytic(signal, envelope, frequency)

    def process_host(self, frames: np.ndarray, chunk_frames: int = 1024) -> Analytic:
        """Frames in host memory (pinned, for copies that overlap): chunks alternate between two
        streams, so that one chunk's copy to the device runs while the other's kernels do. Results
        stay on the device."""
        _check_frames(frames, self.frame_size, self.max_frames)
        n = frames.shape[0]
        for index, start in enumerate(range(0, n, chunk_frames)):
            lane = index % 2
            stop = min(n, start + chunk_frames)
            with self._streams[lane]:
                self._frames[start:stop].set(frames[start:stop], stream=self._streams[lane])
                self.process(self._frames[start:stop], lane=lane, offset=start)
        for stream in self._streams:
            stream.synchronize()
        return Analytic(self._signal[:n], self._envelope[:n], self._frequency[:n])


def pinned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A host array in page-locked memory, which the GPU copies from asynchronously."""
    import cupy as cp

    count = int(np.prod(shape))
    memory = cp.cuda.alloc_pinned_memory(count * np.dtype(dtype).itemsize)
    return np.frombuffer(memory, dtype, count).reshape(shape)


def make_processor(frame_size: int = 4096, max_frames: int = 1024, *, prefer: str = "auto") -> Processor:
    """The GPU processor when CuPy and a GPU are there (and `prefer` allows), else the CPU one.
    The reason for falling back is logged once."""
    if prefer not in ("auto", "gpu", "cpu"):
        raise ValueError(f"prefer: must be 'auto', 'gpu' or 'cpu', got {prefer!r}")
    if prefer != "cpu":
        reason = gpu_unavailable_reason()
        if reason is None:
            return GpuHolomorphic(frame_size, max_frames)
        if prefer == "gpu":
            raise RuntimeError(f"no GPU backend: {reason}")
        _say_once(f"holomorphic kernel on the CPU: {reason}")
    return CpuHolomorphic(frame_size, max_frames)


def gpu_unavailable_reason() -> str | None:
    """None when CuPy can run on a GPU here, else why not."""
    try:
        import cupy as cp

        count = cp.cuda.runtime.getDeviceCount()
    except Exception as error:  # not installed, no driver, no device: all mean "CPU path"
        return f"CuPy unavailable ({type(error).__name__}: {error})"
    return None if count > 0 else "CuPy found no GPU"


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning(message)


def reference(frames: np.ndarray) -> Analytic:
    """scipy.signal.hilbert in float64, and envelope and frequency from it: the correctness reference."""
    import scipy.signal

    z = scipy.signal.hilbert(frames.astype(np.float64), axis=-1)
    frequency = np.empty(z.shape)
    frequency[:, 1:] = np.angle(z[:, 1:] * np.conj(z[:, :-1]))
    frequency[:, 0] = frequency[:, 1]
    return Analytic(z, np.abs(z), frequency)
