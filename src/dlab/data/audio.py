"""Sound as model input: WAV files read and checked, then log-mel spectrograms or MFCCs in torch.

    power(t, f) = |STFT(x)|²                  (Hann window, n_fft samples, hop samples apart)
    mel(t, m)   = Σ_f H[m, f] · power(t, f)     (triangular filters evenly spaced in mel)
    log_mel     = log(mel + 1e-10)
    mfcc(t, k)  = Σ_m log_mel(t, m) · cos(π k (m + ½) / M) · norm_k    (orthonormal DCT-II)

with mel(f) = 2595 log10(1 + f / 700) (HTK). The same code computes the features when a data set
is built and when `dlab predict` or `dlab serve` receives a clip; the settings are saved with the
run (`meta.json`, data.details.audio), so training and inference cannot disagree.

A WAV at another sample rate is resampled (polyphase, scipy) to the rate the model was trained
at; stereo, empty, truncated, non-PCM and over-long files are refused, each with one line.
"""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dlab.errors import InputError

MAX_SECONDS = 60.0  # longest clip read, whatever the model


class AudioFeatures(BaseModel):
    """How a clip becomes frames; saved with every audio run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mfcc", "log_mel"] = Field("mfcc", description="features per frame")
    rate: int = Field(8000, ge=1000, le=96_000, description="sample rate clips are resampled to")
    n_fft: int = Field(256, ge=16, le=8192, description="samples per analysis window")
    hop: int = Field(80, ge=1, le=8192, description="samples between two frames (10 ms at 8 kHz)")
    n_mels: int = Field(40, ge=4, le=256, description="mel filters")
    n_mfcc: int = Field(13, ge=1, le=128, description="cepstral coefficients kept (mfcc)")

    @property
    def size(self) -> int:
        """Numbers per frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels


def read_wav(source: str | Path | bytes, rate: int, name: str | None = None) -> np.ndarray:
    """A mono PCM WAV (file path or bytes) as float32 samples in [-1, 1] at `rate` Hz."""
    name = name or (str(source) if not isinstance(source, bytes) else "upload")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    try:
        with wave.open(io.BytesIO(data), "rb") as clip:
            channels, width, found_rate = (
                clip.getnchannels(),
                clip.getsampwidth(),
                clip.getframerate(),
            )
            declared = clip.getnframes()
            raw = clip.readframes(declared)
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{name}: not a PCM WAV file ({exc})") from None
    if channels != 1:
        raise InputError(
            f"{name}: {channels} channels; dlab reads mono WAV (mix it down first, e.g. "
            "`sox in.wav -c 1 out.wav`)"
        )
    if width not in (1, 2, 4):
        raise InputError(f"{name}: {8 * width}-bit samples; dlab reads 8-, 16- or 32-bit PCM")
    if declared == 0 or not raw:
        raise InputError(f"{name}: the WAV holds no samples")
    if len(raw) < declared * width:
        raise InputError(
            f"{name}: truncated: the header declares {declared} samples, the file holds "
            f"{len(raw) // width}"
        )
    if declared / max(found_rate, 1) > MAX_SECONDS:
        raise InputError(
            f"{name}: {declared / found_rate:.1f} s; clips of at most {MAX_SECONDS:g} s"
        )
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    else:
        kind = np.int16 if width == 2 else np.int32
        samples = np.frombuffer(raw, kind).astype(np.float32) / float(np.iinfo(kind).max + 1)
    if found_rate != rate:  # polyphase resampling to the model's rate
        from scipy.signal import resample_poly

        common = math.gcd(rate, found_rate)
        samples = resample_poly(samples, rate // common, found_rate // common).astype(np.float32)
    return samples


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Float samples in [-1, 1] as a 16-bit mono WAV (for tests, demos and exported clips)."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(pcm.tobytes())


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, rate: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters with peaks evenly spaced in mel, 0 to rate/2."""
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(
            0, float(hz_to_mel(torch.tensor(rate / 2.0))), n_mels + 2, dtype=torch.float64
        )
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_in, n_out) orthonormal DCT-II: x @ D is scipy.fft.dct(x, type=2, norm='ortho')[:n_out]."""
    m = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * k * (m + 0.5) / n_in) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def features(samples: np.ndarray | torch.Tensor, config: AudioFeatures) -> torch.Tensor:
    """(frames, config.size) log-mel or MFCC frames of one clip."""
    signal = torch.as_tensor(samples, dtype=torch.float32)
    if len(signal) < config.n_fft:  # a very short clip still gives one frame
        signal = torch.nn.functional.pad(signal, (0, config.n_fft - len(signal)))
    spectrum = torch.stft(
        signal,
        config.n_fft,
        hop_length=config.hop,
        window=torch.hann_window(config.n_fft),
        center=True,
        return_complex=True,
    )  # (freqs, frames)
    power = spectrum.abs().pow(2)
    mel = mel_filterbank(config.n_mels, config.n_fft, config.rate) @ power  # (mels, frames)
    log_mel = torch.log(mel + 1e-10).T  # (frames, mels)
    if config.kind == "log_mel":
        return log_mel
    return log_mel @ dct_matrix(config.n_mels, config.n_mfcc)
