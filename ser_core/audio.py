"""Audio decoding and validation: any file or bytes to mono float32 at 16 kHz.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 quickly; PyAV (FFmpeg in its
wheel) reads everything else (WebM/Opus, M4A/AAC, video containers). A FLAC
file is decoded by dr_flac (miniaudio) first: libsndfile's very samples, in
two thirds of its time.
Every failure is one of the typed errors in :mod:`ser_core.errors`.
"""
from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from .errors import (
    AudioError, EmptyAudioError, InvalidSamplesError, NoAudioStreamError,
    SilentAudioError, TooLongError, TooShortError, UnreadableAudioError,
    UnsupportedFormatError,
)

Source = Union[str, os.PathLike, bytes, BinaryIO]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".webm", ".m4a",
                    ".mp4", ".aac", ".aif", ".aiff", ".mkv", ".mov", ".wma")
SILENCE_PEAK = 1e-4      # below this after removing DC, a signal holds no speech
MAX_SAMPLE = 1000.0      # float audio lives in [-1, 1]; far beyond is unscaled or corrupt data
MIN_SECONDS = 0.1


def _name_of(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "<audio>"


def _as_stream(source: Source, label: str) -> BinaryIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise EmptyAudioError("file is empty", source=label)
        return io.BytesIO(data)
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)        # one system call for all three checks (batch jobs open thousands)
        except (OSError, ValueError):
            raise UnreadableAudioError("file not found", source=label) from None
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableAudioError("is a folder, not an audio file", source=label)
        if st.st_size == 0:
            raise EmptyAudioError("file is empty", source=label)
        return open(source, "rb")
    source.seek(0)
    return source


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(32 <= b < 127 or b in b"\t\r\n" for b in head)
    return printable / len(head) > 0.95


SF_BLOCK = 1 << 18          # frames per libsndfile read


def _sf_blocks(f, frames: int) -> Iterator[np.ndarray]:
    """Read an open SoundFile to its real end, ``frames`` at a time.

    Never trusts the header's frame count: a damaged MP3 can claim hours it does
    not hold (soundfile's own ``read``/``blocks`` would allocate for, or repeat
    stale data over, the claimed length).
    """
    while True:
        chunk = f.read(frames, dtype="float32", always_2d=True)
        if not len(chunk):
            return
        yield chunk


def _decode_soundfile(fh: BinaryIO, longer_than: float | None = None) -> tuple[np.ndarray, int] | float:
    import soundfile as sf

    with sf.SoundFile(fh) as f:
        if longer_than is not None and f.frames / f.samplerate > longer_than:
            return f.frames / f.samplerate          # the header's length, as duration_seconds reads it
        chunks = list(_sf_blocks(f, SF_BLOCK))
        sr, channels = f.samplerate, f.channels
    data = np.concatenate(chunks) if chunks else np.zeros((0, channels), np.float32)
    return data, int(sr)


FLAC_MAGIC = b"fLaC"
FLAC_HEADER_BYTES = 1 << 16     # read for a FLAC file's length before the rest (its metadata comes first)


def _decode_flac(fh: BinaryIO, longer_than: float | None = None) -> tuple[np.ndarray, int] | float | None:
    """A native FLAC file through dr_flac (miniaudio), or None for the other decoders to try.

    The samples equal libsndfile's to the bit (8-, 16- and 24-bit, mono and stereo, and all 4,902 clips
    of the four corpora, session 30; tests/test_audio.py checks the first of each), in about two thirds
    of its time (0.52 against 0.75 ms for a 3.5 s clip, most of it libsndfile copying samples one by
    one). A file dr_flac cannot read whole, or whose header does not give its length, goes to
    libsndfile as before, so damaged files keep the answers and messages they had.
    """
    try:
        import miniaudio
    except ImportError:
        return None
    head = fh.read(FLAC_HEADER_BYTES)
    try:
        info = miniaudio.flac_get_info(head)
        if not info.num_frames or not info.sample_rate or not info.nchannels:
            return None
        if longer_than is not None and info.num_frames / info.sample_rate > longer_than:
            return info.num_frames / info.sample_rate     # the header's length, as duration_seconds reads it
        decoded = miniaudio.flac_read_f32(head + fh.read())
    except miniaudio.MiniaudioError:
        return None
    samples = np.frombuffer(decoded.samples, np.float32).reshape(-1, decoded.nchannels)
    if samples.shape[0] != info.num_frames:          # a damaged stream: libsndfile reads what it can
        return None
    return samples, int(decoded.sample_rate)


def _undecodable(label: str, head: bytes) -> AudioError:
    """The typed error for bytes no decoder accepts: text, a foreign extension, or plain garbage."""
    ext = Path(label).suffix.lower()
    if _looks_like_text(head):
        return UnsupportedFormatError("is a text file, not audio", source=label)
    if ext and ext not in AUDIO_EXTENSIONS:
        return UnsupportedFormatError(f"unsupported format '{ext}'", source=label)
    return UnreadableAudioError("not a decodable audio file", source=label)


def _open_av(fh: BinaryIO, label: str, head: bytes):
    """Open a container with PyAV; its first audio stream, or a typed error."""
    import av

    if _looks_like_text(head):
        raise _undecodable(label, head)
    try:
        container = av.open(fh, mode="r")
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise _undecodable(label, head) from exc
    if not container.streams.audio:
        container.close()
        raise NoAudioStreamError("contains no audio stream", source=label)
    return container


def _av_mono(container, label: str, rate: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded frames of the first audio stream as (mono float32, rate).

    Channels are averaged here: FFmpeg's own stereo-to-mono downmix adds the
    channels at -3 dB each, which lifts a correlated signal above full scale.
    """
    import av

    resampler, key = None, None
    frames = container.decode(container.streams.audio[0])
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except (av.error.FFmpegError, ValueError) as exc:
            if resampler is None:
                raise UnreadableAudioError("audio stream could not be decoded", source=label) from exc
            break          # a damaged tail: keep what decoded
        if not frame.sample_rate:
            raise UnreadableAudioError("audio stream has no sample rate", source=label)
        frame_key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if frame_key != key:           # first frame, or the stream changed layout/rate mid-way
            if resampler is not None:
                yield from _mono_frames(resampler.resample(None))
            rate = rate or frame.sample_rate
            resampler, key = av.AudioResampler(format="flt", rate=rate), frame_key
        yield from _mono_frames(resampler.resample(frame))
    if resampler is not None:
        yield from _mono_frames(resampler.resample(None))


def _mono_frames(frames) -> Iterator[tuple[np.ndarray, int]]:
    for out in frames:
        ch = max(len(out.layout.channels), 1)
        yield out.to_ndarray().reshape(-1, ch).mean(axis=1, dtype=np.float32), int(out.sample_rate)


def _decode_pyav(fh: BinaryIO, label: str, head: bytes = b"",
                 longer_than: float | None = None) -> tuple[np.ndarray, int] | float:
    container = _open_av(fh, label, head)
    with container:
        known = container.duration / 1_000_000 if container.duration and container.duration > 0 else None
        if longer_than is not None and known is not None and known > longer_than:
            return known
        chunks, sr = [], 0
        for chunk, sr in _av_mono(container, label):
            chunks.append(chunk)
    if not chunks or not sr:
        raise EmptyAudioError("audio stream holds no samples", source=label)
    samples = np.concatenate(chunks).astype(np.float32)[:, None]
    if longer_than is not None and known is None and samples.shape[0] / sr > longer_than:
        return samples.shape[0] / sr    # no length in the container: duration_seconds decodes to tell
    return samples, int(sr)


def decode(source: Source, *, name: str | None = None,
           longer_than: float | None = None) -> tuple[np.ndarray, int] | float:
    """Decode a file, path or bytes to ``(samples[n, channels] float32, sample_rate)``.

    With ``longer_than`` (seconds): for a file longer than that, its length in seconds instead, as
    :func:`duration_seconds` gives it (from the header, without decoding; a container without one is
    decoded to tell), so a caller that streams long files opens a short one once, not once to measure
    it and again to decode it, and has a long one's length for its progress or its refusal.
    """
    label = _name_of(source, name)
    fh = _as_stream(source, label)
    try:
        head = fh.read(64)
        fh.seek(0)
        if _looks_like_text(head):
            raise UnsupportedFormatError("is a text file, not audio", source=label)
        if head.startswith(FLAC_MAGIC):
            decoded = _decode_flac(fh, longer_than)
            if decoded is not None:
                return decoded
            fh.seek(0)
        try:
            return _decode_soundfile(fh, longer_than)
        except Exception:  # libsndfile refuses many valid containers; PyAV tries next
            fh.seek(0)
        return _decode_pyav(fh, label, head, longer_than)
    finally:
        if isinstance(source, (str, os.PathLike)):
            fh.close()


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: (n, ch) -> (n,)."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.shape[1] == 1 and samples.dtype == np.float32:
        return samples[:, 0]            # the mean of one channel is that channel, exactly (and a view)
    return samples.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling (soxr); a no-op when the rates agree."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32)


def validate(y: np.ndarray, sr: int, *, label: str = "<audio>", max_seconds: float | None = None,
             min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Reject signals that cannot carry speech, with a one-line reason."""
    if y.size == 0:
        raise EmptyAudioError("audio holds no samples", source=label)
    lo, hi = y.min(), y.max()                  # both checks below read the extremes, taken once
    _check_extremes(lo, hi, label)
    seconds = y.size / sr
    if max_seconds is not None and seconds > max_seconds:
        raise TooLongError(f"audio is {seconds:.0f} s long; the limit is {max_seconds:.0f} s", source=label)
    if seconds < min_seconds:
        raise TooShortError(f"audio is {seconds * 1000:.0f} ms long; at least {min_seconds * 1000:.0f} ms is needed",
                            source=label)
    if _silent(y, lo, hi, SILENCE_PEAK):
        raise SilentAudioError("audio is silent (no signal above the noise floor)", source=label)
    return y


def check_samples(y: np.ndarray, label: str = "<audio>") -> None:
    """Reject NaN/inf samples and magnitudes no float audio has (features would overflow)."""
    if y.size:
        _check_extremes(y.min(), y.max(), label)


# Both checks read a signal's extremes (and mean): two or three passes and no temporary arrays, where
# np.isfinite(y).all(), np.abs(y).max() and np.abs(y - mean).max() make five more (tested equal to them).
def _check_extremes(lo, hi, label: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):        # min and max carry any NaN or infinity
        raise InvalidSamplesError("audio contains NaN or infinite samples", source=label)
    peak = max(-float(lo), float(hi))                      # the largest magnitude
    if peak > MAX_SAMPLE:
        raise InvalidSamplesError(f"sample values reach {peak:.3g}; float audio must lie within [-1, 1] "
                                  "(unscaled integer samples?)", source=label)


def _silent(y: np.ndarray, lo, hi, threshold: float) -> bool:
    # float rounding is monotonic, so the largest |y - mean| is that of an extreme, computed the same way
    mean = np.mean(y)
    return max(float(hi - mean), float(mean - lo)) < threshold


def is_silent(y: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    """True when the signal, once its DC offset is removed, never rises above ``threshold``."""
    if y.size == 0:
        return True
    return _silent(y, y.min(), y.max(), threshold)


def load(source: Source, *, sr: int = 16000, name: str | None = None, max_seconds: float | None = None,
         check: bool = True, longer_than: float | None = None) -> np.ndarray | float:
    """Decode, mix to mono, resample to ``sr`` and validate. Returns float32 samples
    (``longer_than``: a longer file's length in seconds, a float, undecoded; see :func:`decode`)."""
    label = _name_of(source, name)
    decoded = decode(source, name=label, longer_than=longer_than)
    if isinstance(decoded, float):
        return decoded
    samples, orig_sr = decoded
    if max_seconds is not None and samples.shape[0] / orig_sr > max_seconds:
        raise TooLongError(f"audio is {samples.shape[0] / orig_sr:.0f} s long; the limit is {max_seconds:.0f} s",
                           source=label)
    y = resample(to_mono(samples), orig_sr, sr)
    return validate(y, sr, label=label, max_seconds=max_seconds) if check else y


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim to the first ``n`` samples or zero-pad at the end."""
    if y.shape[-1] >= n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)


def trim_bounds(y: np.ndarray, top_db: float = 40.0, frame: int = 512, hop: int = 128) -> tuple[int, int]:
    """Start and end sample of what :func:`trim_silence` keeps (prediction places windows with it)."""
    if y.size < frame:
        return 0, y.size
    # each sample squared once, then summed over strided frames of the squares (a view: no gathered copy);
    # the same sums, in the same order, as squaring every frame's copy (np.mean's sum, then / frame)
    squares = np.lib.stride_tricks.sliding_window_view(np.square(y), frame)[::hop]
    rms = np.sqrt(np.add.reduce(squares, axis=1) / frame + 1e-12)
    db = 20 * np.log10(rms / rms.max())
    voiced = np.flatnonzero(db > -top_db)
    if voiced.size == 0:
        return 0, y.size
    return int(voiced[0] * hop), int(min(voiced[-1] * hop + frame, y.size))


def trim_silence(y: np.ndarray, top_db: float = 40.0, frame: int = 512, hop: int = 128) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame."""
    start, end = trim_bounds(y, top_db, frame, hop)
    return y[start:end]


def normalise_loudness(y: np.ndarray, target_rms_db: float = -23.0) -> np.ndarray:
    """Scale to a fixed RMS level (speech-active frames) so gain does not change features."""
    y = y - np.mean(y)
    rms = float(np.sqrt(np.mean(y ** 2)))
    if rms < 1e-8:
        return y.astype(np.float32)
    gain = 10 ** (target_rms_db / 20) / rms
    return np.clip(y * gain, -1.0, 1.0).astype(np.float32)


def stream(source: Source, *, sr: int = 16000, block_seconds: float = 10.0,
           name: str | None = None) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at ``sr`` without holding the whole file in memory."""
    label = _name_of(source, name)
    fh = _as_stream(source, label)
    try:
        yield from _stream_blocks(fh, sr, block_seconds, label)
    finally:
        if isinstance(source, (str, os.PathLike)):
            fh.close()


def _stream_blocks(fh: BinaryIO, sr: int, block_seconds: float, label: str) -> Iterator[np.ndarray]:
    import soundfile as sf
    import soxr

    try:
        info = sf.info(fh)
        fh.seek(0)
    except Exception:
        fh.seek(0)
        info = None
    if info is not None:
        rs = soxr.ResampleStream(info.samplerate, sr, 1, dtype="float32", quality="HQ")
        block = max(1, int(block_seconds * info.samplerate))
        with sf.SoundFile(fh) as f:
            chunks, got = _sf_blocks(f, block), False
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except (RuntimeError, ValueError, OSError) as exc:    # libsndfile on damaged data
                    if not got:
                        raise UnreadableAudioError("audio data could not be decoded", source=label) from exc
                    break                                             # a damaged tail: keep what decoded
                got = True
                yield rs.resample_chunk(to_mono(chunk))
        yield rs.resample_chunk(np.zeros(0, np.float32), last=True)
        return
    head = fh.read(64)
    fh.seek(0)
    with _open_av(fh, label, head) as container:
        buf, have, want = [], 0, int(block_seconds * sr)
        for a, _ in _av_mono(container, label, rate=sr):
            buf.append(a)
            have += a.size
            if have >= want:
                yield np.concatenate(buf)
                buf, have = [], 0
        if buf:
            yield np.concatenate(buf)


def duration_seconds(source: Source, *, name: str | None = None) -> float:
    """Length of a file in seconds from its header when possible, else by decoding."""
    label = _name_of(source, name)
    fh = _as_stream(source, label)
    try:
        import soundfile as sf

        head = fh.read(64)
        fh.seek(0)
        try:
            info = sf.info(fh)
            return info.frames / info.samplerate
        except Exception:
            fh.seek(0)
        with _open_av(fh, label, head) as c:
            if c.duration and c.duration > 0:
                return c.duration / 1_000_000
        fh.seek(0)
        samples, sr = decode(fh, name=label)
        return samples.shape[0] / sr
    finally:
        if isinstance(source, (str, os.PathLike)):
            fh.close()


__all__ = [
    "AudioError", "decode", "load", "to_mono", "resample", "validate", "check_samples", "is_silent", "fix_length",
    "trim_bounds", "trim_silence", "normalise_loudness", "stream", "duration_seconds", "AUDIO_EXTENSIONS",
]
