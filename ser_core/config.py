"""Frozen configuration objects that travel with every saved model.

A model directory holds a :class:`ModelSpec` (``spec.json``): the feature
settings, the label order and the normalisation statistics computed on the
training split. Prediction rebuilds features from it, so a saved model always
sees the features it was trained on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError

EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)

FEATURE_KINDS = ("seed000", "logmel", "mfcc_seq", "image", "stats")


@dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes the model's input array.

    ``kind`` picks the extractor in :mod:`ser_core.features`; the other fields
    are its settings. The defaults are seed 000's two-channel input:
    32-band mel (dB) and MFCC(13)+chroma(12)+contrast(7), shape (32, 94, 2).
    """

    kind: str = "seed000"
    sample_rate: int = 16000
    duration: float = 3.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 32
    n_mfcc: int = 13
    fmin: float = 0.0
    fmax: float | None = None
    deltas: bool = False
    image_size: int = 128
    trim_silence: bool = False
    trim_top_db: float = 40.0
    loudness_norm: bool = False
    # Per-clip mean of every band subtracted (over frames with sound): removes a recording's fixed
    # spectral tilt (microphone, room, voice), the part of a corpus's sound that does not carry emotion.
    band_norm: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ConfigError(f"unknown feature kind {self.kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
        if self.sample_rate <= 0 or self.duration <= 0 or self.hop_length <= 0 or self.n_fft <= 0:
            raise ConfigError("sample_rate, duration, n_fft and hop_length must be positive")
        if min(self.n_mels, self.n_mfcc, self.image_size) < 1:
            raise ConfigError("n_mels, n_mfcc and image_size must be positive")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ConfigError(f"need 0 <= fmin < fmax <= {nyquist:g} Hz (half the sample rate), "
                              f"got fmin {self.fmin:g}, fmax {fmax:g}")
        if self.band_norm and self.kind != "logmel":   # its floor (top_db below the peak) marks padding
            raise ConfigError(f"band_norm applies to logmel features, not {self.kind!r}")
        if self.kind == "seed000" and self.n_mels != self.n_mfcc + 19:
            raise ConfigError(f"seed000 stacks {self.n_mels} mel bands over n_mfcc + 12 chroma + 7 contrast rows: "
                              f"n_mels must be n_mfcc + 19 = {self.n_mfcc + 19}")

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def n_frames(self) -> int:
        return 1 + self.n_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        reject_unknown(cls, d, "feature setting")
        return cls(**d)

    def key(self) -> str:
        """A short stable hash, used to key the feature cache."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ModelSpec:
    """Everything prediction needs besides the weights."""

    arch: str
    features: FeatureConfig
    labels: tuple[str, ...]
    norm_mean: tuple = field(default=())
    norm_std: tuple = field(default=())
    protocol: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Apply the training-split statistics to a batch or single example."""
        if not self.norm_mean:
            return x.astype(np.float32, copy=False)
        mean = np.asarray(self.norm_mean, dtype=np.float32)
        std = np.asarray(self.norm_std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = self.features.to_dict()
        d["labels"] = list(self.labels)
        d["norm_mean"] = np.asarray(self.norm_mean).tolist()
        d["norm_std"] = np.asarray(self.norm_std).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        try:
            return cls(
                arch=str(d["arch"]),
                features=FeatureConfig.from_dict(d["features"]),
                labels=tuple(d["labels"]),
                norm_mean=_as_tuple(d.get("norm_mean", ())),
                norm_std=_as_tuple(d.get("norm_std", ())),
                protocol=str(d.get("protocol", "")),
                created=str(d.get("created", "")),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model spec is malformed ({exc})") from exc

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "ModelSpec":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError as exc:
            raise ModelError(f"no spec.json in {Path(path).parent}") from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"spec.json in {Path(path).parent} is not valid JSON") from exc


def reject_unknown(cls, d: dict[str, Any], what: str) -> None:
    """Refuse keys that are not fields of the dataclass ``cls`` (typos must not pass silently)."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what}(s): {', '.join(sorted(unknown))}")


def _as_tuple(v: Any) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(_as_tuple(x) for x in v)
    return v


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see either the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """:func:`atomic_write_text` for bytes (a saliency npz or PNG, a novelty gate); returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where the RAVDESS corpus lives: ``SER_DATA_DIR``, else ``data/ravdess``."""
    env = os.environ.get("SER_DATA_DIR")
    return Path(env).expanduser() if env else project_root() / "data" / "ravdess"


def runs_dir() -> Path:
    env = os.environ.get("SER_RUNS_DIR")
    return Path(env).expanduser() if env else project_root() / "runs"


def models_dir() -> Path:
    env = os.environ.get("SER_MODELS_DIR")
    return Path(env).expanduser() if env else project_root() / "models"


def cache_dir() -> Path:
    env = os.environ.get("SER_CACHE_DIR")
    return Path(env).expanduser() if env else project_root() / ".cache" / "features"


def public_demo() -> bool:
    """``SER_PUBLIC_DEMO=1``: a deployment strangers reach. The app serves Predict and Evaluate
    only, and nothing writes to disk: no training, no promotion, no uploads into the data root,
    no run folder touched (the engine refuses those calls, not just the pages)."""
    return os.environ.get("SER_PUBLIC_DEMO", "").strip().lower() in ("1", "true", "yes", "on")


def max_audio_seconds() -> float:
    """Longest audio accepted by whole-file decoding (streaming has no limit)."""
    try:
        return float(os.environ.get("SER_MAX_AUDIO_SECONDS", "600"))
    except ValueError:
        return 600.0
