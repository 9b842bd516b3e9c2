"""Mel analysis and spectral metrics for copy-synthesis checks, benchmarks and the Griffin-Lim baseline.

Not used on the serving path. Mel filterbanks, Griffin-Lim and mel inversion come from librosa
(a dev dependency, imported lazily so ``engine`` imports without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _librosa() -> Any:
    try:
        import librosa
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("engine.dsp needs librosa (pip install -r requirements-dev.txt)") from e
    return librosa


@dataclass(frozen=True)
class MelConfig:
    """STFT/mel parameters. Defaults = jik876 HiFi-GAN V1 (22.05 kHz)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0

    @classmethod
    def from_jik876(cls, config: dict[str, Any]) -> MelConfig:
        return cls(
            sample_rate=int(config["sampling_rate"]),
            n_fft=int(config["n_fft"]),
            hop_length=int(config["hop_size"]),
            win_length=int(config["win_size"]),
            n_mels=int(config["num_mels"]),
            fmin=float(config["fmin"]),
            fmax=None if config.get("fmax") is None else float(config["fmax"]),
        )

    def mel_basis(self) -> np.ndarray:
        """Slaney-normalised mel filterbank [n_mels, n_fft // 2 + 1] (librosa)."""
        return _librosa().filters.mel(
            sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax
        )


def _check_wave(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform [samples], got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {wav.dtype}")
    return wav.astype(np.float32, copy=False)


def jik876_log_mel(wav: np.ndarray, cfg: MelConfig | None = None) -> np.ndarray:
    """jik876 ``mel_spectrogram``: reflect-pad ``(n_fft - hop) / 2``, STFT without centring, magnitude
    ``sqrt(|X|^2 + 1e-9)``, mel, ``log(max(·, 1e-5))``.

    Returns float32 [frames, n_mels] with frames = samples // hop.
    """
    cfg = cfg or MelConfig()
    y = torch.from_numpy(_check_wave(wav))[None, None]
    pad = (cfg.n_fft - cfg.hop_length) // 2
    y = torch.nn.functional.pad(y, (pad, pad), mode="reflect")[0, 0]
    spec = torch.stft(
        y,
        cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=torch.hann_window(cfg.win_length),
        center=False,
        return_complex=True,
    )
    mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = torch.from_numpy(cfg.mel_basis()) @ mag
    return torch.log(torch.clamp(mel, min=1e-5)).T.contiguous().numpy().astype(np.float32)


def kantts_mel(
    wav: np.ndarray,
    cfg: MelConfig | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> np.ndarray:
    """KAN-TTS ``melspectrogram`` (spec §4): ``|stft|`` (centred, Hann), Slaney mel,
    ``20 log10(max(1e-5, ·)) - 20``, ``clip((S + 100) / 100, 0, 1)``, then optional per-dimension mean/std.
    Defaults: 16 kHz, hop 200, n_fft 2048.
    """
    cfg = cfg or MelConfig(16000, 2048, 200, 1000, 80, 0.0, 8000.0)
    mag = np.abs(
        _librosa().stft(
            _check_wave(wav), n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length
        )
    )
    s = 20.0 * np.log10(np.maximum(1e-5, cfg.mel_basis() @ mag)) - 20.0
    s = np.clip((s + 100.0) / 100.0, 0.0, 1.0).T
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("kantts_mel: give both mean and std, or neither")
        s = (s - mean) / std
    return s.astype(np.float32)


def griffin_lim_from_log_mel(
    log_mel: np.ndarray, cfg: MelConfig | None = None, n_iter: int = 32
) -> np.ndarray:
    """Baseline vocoder: invert a jik876 natural-log mel [frames, n_mels] with librosa NNLS mel inversion and
    Griffin-Lim. Output has ``frames * hop`` samples.
    """
    cfg = cfg or MelConfig()
    librosa = _librosa()
    mel = np.exp(np.asarray(log_mel, dtype=np.float64).T)
    mag = librosa.feature.inverse.mel_to_stft(
        mel, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin, fmax=cfg.fmax
    )
    n = mel.shape[1] * cfg.hop_length
    mag = np.concatenate([mag, mag[:, -1:]], axis=1)  # centred STFT of n samples has n // hop + 1 frames
    y = librosa.griffinlim(
        mag,
        n_iter=n_iter,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_fft=cfg.n_fft,
        length=n,
        random_state=0,
    )
    # jik876 frame t is centred at sample t * hop + hop / 2, librosa's at t * hop: delay by hop / 2.
    shift = cfg.hop_length // 2
    return np.concatenate([np.zeros(shift), y[: n - shift]]).astype(np.float32)


def log_spectral_distance(
    reference: np.ndarray, estimate: np.ndarray, n_fft: int = 1024, hop_length: int = 256, eps: float = 1e-8
) -> float:
    """Log-spectral distance in dB: mean over frames of the RMS over bins of ``10 log10(P_ref / P_est)``.

    Both signals are cut to the shorter length; power spectra use a centred Hann STFT.
    """
    ref, est = _check_wave(reference), _check_wave(estimate)
    n = min(len(ref), len(est))
    if n < n_fft:
        raise ValueError(f"signals too short for LSD ({n} samples < n_fft {n_fft})")
    librosa = _librosa()
    p_ref = np.abs(librosa.stft(ref[:n], n_fft=n_fft, hop_length=hop_length)) ** 2
    p_est = np.abs(librosa.stft(est[:n], n_fft=n_fft, hop_length=hop_length)) ** 2
    diff = 10.0 * np.log10((p_ref + eps) / (p_est + eps))
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))
