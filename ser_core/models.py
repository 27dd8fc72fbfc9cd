"""Registry of Keras architectures, each with the features it expects.

TensorFlow is imported only inside the builders, so listing architectures
(the app's training form, ``ser --help``) stays fast.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import FeatureConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    source: str
    features: FeatureConfig
    build: Callable[..., Any]
    train_defaults: dict = field(default_factory=dict)


REGISTRY: dict[str, Architecture] = {}


def register(name: str, title: str, source: str, features: FeatureConfig, **train_defaults):
    def deco(fn):
        REGISTRY[name] = Architecture(name, title, source, features, fn, train_defaults)
        return fn
    return deco


def get(name: str) -> Architecture:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; choose one of {', '.join(REGISTRY)}") from None


def names() -> list[str]:
    return list(REGISTRY)


def tunable(name: str) -> dict[str, Any]:
    """An architecture's keyword parameters and their defaults (what ``--param`` may set)."""
    sig = inspect.signature(get(name).build)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("input_shape", "n_classes")}


def check_params(name: str, params: dict) -> None:
    known = tunable(name)
    bad = sorted(set(params) - set(known))
    if bad:
        raise ConfigError(f"{name} has no parameter {', '.join(bad)}; it takes "
                          + ", ".join(f"{k} (default {v})" for k, v in known.items()))


def build(name: str, input_shape: tuple[int, ...], n_classes: int, **params):
    """Build an uncompiled Keras model of a registered architecture."""
    import keras

    keras.utils.set_random_seed(int(params.pop("seed", 0)))
    check_params(name, params)
    return get(name).build(tuple(input_shape), int(n_classes), **params)


def _classifier(x, units: int, dropout: float, n_classes: int):
    """Dense + ReLU, dropout, softmax over the classes: the head every registered model ends with."""
    from keras import layers

    from .layers import FastDropout

    x = layers.Dense(units, activation="relu")(x)
    x = FastDropout(dropout)(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32")(x)   # float32 even in mixed precision


def _conv_block(x, filters: int, *, pool=(2, 2), dropout: float = 0.0, batchnorm: bool = True):
    from keras import layers

    from .layers import FastDropout, FusedBatchNormalization

    x = layers.Conv2D(filters, 3, padding="same", use_bias=not batchnorm)(x)
    if batchnorm:
        x = FusedBatchNormalization()(x)
    x = layers.Activation("relu")(x)
    if pool:
        x = layers.MaxPooling2D(pool)(x)
    if dropout:
        x = FastDropout(dropout)(x)
    return x


@register("seed000_cnn", "Seed 000: 2-channel CNN", "seed 000",
          FeatureConfig(kind="seed000"), recalibrate_bn=True)
def seed000_cnn(input_shape, n_classes, width: int = 32, block_dropout: float = 0.1, dropout: float = 0.4):
    """Three conv blocks (BN, max-pool, dropout), global average pooling, dense + dropout, softmax.

    Block dropout stays small (dropout feeding BatchNorm shifts its variance) and
    training re-estimates the BatchNorm statistics every epoch (``recalibrate_bn``):
    with lagging moving averages this model predicted one class for every clip."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape)
    x = inp
    for mult in (1, 2, 4):
        x = _conv_block(x, width * mult, dropout=block_dropout)
    x = layers.GlobalAveragePooling2D()(x)
    out = _classifier(x, 128, dropout, n_classes)
    return keras.Model(inp, out, name="seed000_cnn")


@register("seed001_logmel_cnn", "Seed 001: log-mel 4-layer CNN", "seed 001",
          FeatureConfig(kind="logmel", n_mels=64))
def seed001_logmel_cnn(input_shape, n_classes, width: int = 16, dropout: float = 0.3):
    """Four conv + ReLU + max-pool layers on a log-mel spectrogram, then fully connected layers."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape)
    x = inp
    for mult in (1, 2, 4, 8):
        x = _conv_block(x, width * mult, batchnorm=False)
    x = layers.Flatten()(x)
    out = _classifier(x, 128, dropout, n_classes)
    return keras.Model(inp, out, name="seed001_logmel_cnn")


@register("seed002_cnn_lstm", "Seed 002: MFCC CNN + LSTM", "seed 002",
          FeatureConfig(kind="mfcc_seq", n_mfcc=40, n_mels=128))
def seed002_cnn_lstm(input_shape, n_classes, width: int = 64, units: int = 64, dropout: float = 0.3):
    """1-D convolutions over the MFCC sequence extract local patterns; an LSTM reads them in time."""
    import keras
    from keras import layers

    from .layers import FastDropout

    inp = keras.Input(input_shape)
    x = layers.Permute((2, 1, 3))(inp)
    x = layers.Reshape((input_shape[1], input_shape[0] * input_shape[2]))(x)
    for mult in (1, 2):
        x = layers.Conv1D(width * mult, 5, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(2)(x)
        x = FastDropout(dropout / 2)(x)
    x = layers.LSTM(units)(x)
    out = _classifier(x, 64, dropout, n_classes)
    return keras.Model(inp, out, name="seed002_cnn_lstm")


@register("seed003_image_cnn", "Seed 003: spectrogram-image CNN", "seed 003",
          FeatureConfig(kind="image", image_size=128),
          label_smoothing=0.1, online_aug=("brightness_contrast", "time_mask", "freq_mask"), recalibrate_bn=True)
def seed003_image_cnn(input_shape, n_classes, width: int = 32, block_dropout: float = 0.1, dropout: float = 0.4):
    """A custom CNN on 128x128 RGB spectrogram pictures, as an image classifier would be."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape)
    x = inp
    for mult in (1, 2, 4, 4):
        x = _conv_block(x, width * mult, dropout=block_dropout)
    x = layers.GlobalAveragePooling2D()(x)
    out = _classifier(x, 256, dropout, n_classes)
    return keras.Model(inp, out, name="seed003_image_cnn")


@register("seed004_dnn", "Seed 004: feature-statistics DNN", "seed 004",
          FeatureConfig(kind="stats", n_mfcc=40, n_mels=128))
def seed004_dnn(input_shape, n_classes, units: int = 256, dropout: float = 0.4):
    """A fully connected network on per-clip statistics of MFCC, chroma, contrast, tonnetz, ZCR, RMS."""
    import keras
    from keras import layers

    from .layers import FastDropout

    inp = keras.Input(input_shape)
    x = layers.Dense(units, activation="relu")(inp)
    x = FastDropout(dropout)(x)
    out = _classifier(x, units // 2, dropout, n_classes)
    return keras.Model(inp, out, name="seed004_dnn")


@register("ser_crnn", "SER-CRNN: log-mel+deltas CNN, BiGRU, attention pooling (project's own)", "this project",
          FeatureConfig(kind="logmel", n_mels=64, n_fft=1024, hop_length=512, deltas=True,
                        trim_silence=True, loudness_norm=True),
          online_aug=("time_mask", "freq_mask", "freq_shift", "time_stretch"), mixup=0.0, label_smoothing=0.05,
          targeted_aug=False)
def ser_crnn(input_shape, n_classes, width: int = 32, units: int = 64, dropout: float = 0.3):
    """Conv blocks pool frequency more than time; a bidirectional GRU reads the frame sequence;
    attention pooling weighs the frames that carry emotion instead of averaging all of them."""
    import keras
    from keras import layers

    from .layers import FastDropout

    inp = keras.Input(input_shape)
    x = _conv_block(inp, width, pool=(2, 2), dropout=0.1)
    x = _conv_block(x, width * 2, pool=(2, 2), dropout=0.1)
    x = _conv_block(x, width * 4, pool=(2, 1), dropout=0.2)
    x = _conv_block(x, width * 4, pool=(2, 1), dropout=0.2)
    x = layers.Permute((2, 1, 3))(x)
    t = x.shape[1]
    x = layers.Reshape((t, x.shape[2] * x.shape[3]))(x)
    x = layers.Dense(units * 2, activation="relu")(x)
    x = layers.Bidirectional(layers.GRU(units, return_sequences=True))(x)
    scores = layers.Dense(1)(layers.Dense(units, activation="tanh")(x))
    weights = layers.Softmax(axis=1)(scores)
    pooled = layers.Dot(axes=1)([weights, x])
    x = layers.Flatten()(pooled)
    x = FastDropout(dropout)(x)
    out = _classifier(x, 128, dropout, n_classes)
    return keras.Model(inp, out, name="ser_crnn")
