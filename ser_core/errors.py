"""Typed errors of the engine, all in one place.

Every error carries a one-line human message (``str(err)``), so entry points
(CLI, app, training) can show it without a traceback.
"""
from __future__ import annotations


class SERError(Exception):
    """Base class of every error the engine raises on purpose."""

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class AudioError(SERError):
    """The audio could not be turned into a usable signal."""


class EmptyAudioError(AudioError):
    """The file is empty or holds zero samples."""


class UnreadableAudioError(AudioError):
    """The bytes are not a decodable audio file."""


class UnsupportedFormatError(AudioError):
    """The container or codec is not one the engine can decode."""


class NoAudioStreamError(AudioError):
    """The container decodes but holds no audio stream (e.g. video only)."""


class SilentAudioError(AudioError):
    """The signal holds no speech energy (digital silence or a DC offset)."""


class InvalidSamplesError(AudioError):
    """The signal contains NaN or infinite samples."""


class TooLongError(AudioError):
    """The audio is longer than the configured limit."""


class TooShortError(AudioError):
    """The audio is too short to classify."""


class DatasetError(SERError):
    """A dataset folder or manifest is missing, empty or malformed."""


class DownloadError(SERError):
    """A dataset download failed (network, checksum or archive problem)."""


class ModelError(SERError):
    """A model directory is missing, incomplete or unsafe to load."""


class ConfigError(SERError):
    """A training or feature configuration is invalid."""


class RunError(SERError):
    """A training run cannot be started, found or controlled."""
