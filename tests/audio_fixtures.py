"""Bad and odd audio files, generated at test time (no binaries in the repository).

``make_all(folder, speech)`` writes every fixture into ``folder`` and returns
them as :class:`Fixture` records that say what the engine must do with each:
``expect=None`` means a valid prediction (and a successful load);
otherwise the typed error and a word its message must contain. The same
outcome holds for ``ser predict``, the Predictor and training-data loading:
the 20-minute file is streamed by prediction and loaded whole for training
(only a caller that passes ``max_seconds`` refuses it).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_core import errors as E

SR = 16000
LONG = "long_20min.wav"
QUOTED = "it's a \"quoted\" clip – émotion ünïcødé 日本.wav"
NAMES = (
    "empty.wav", "random_bytes.wav", "truncated_header.wav", "truncated_data.wav", "header_only.wav", "notes.txt",
    "text_named.wav", "short_50ms.wav", "silence.wav", "dc_offset.wav", "clipping.wav", "nan.wav", "inf.wav",
    "mono_8k.wav", "stereo_44k.wav", "hires_96k_24bit.wav", "float32.wav", "vorbis.ogg", "lame.mp3",
    "mp3_named.wav", "lying_header.mp3", "opus.ogg", "opus.webm", "aac.m4a", "video_mpeg4_aac.mp4", "video_vp8_opus.webm",
    "video_only.mp4", QUOTED, LONG,
)


@dataclass
class Fixture:
    name: str
    path: Path
    expect: type | None            # None: a valid prediction
    word: str = ""                 # a word the error message must contain


def speech_clip(path: Path) -> np.ndarray:
    """A real speech clip (float32, 16 kHz mono) that the fixtures are made from."""
    y, sr = sf.read(path, dtype="float32")
    assert sr == SR and y.ndim == 1
    return y


def resample(y: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    return soxr.resample(y, SR, sr).astype(np.float32) if sr != SR else y


def tone_noise(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Cheap long audio: a gliding tone in bursts of ~4 syllables a second over low-level noise.

    The bursts give the frame-level dynamics of speech, so the no-speech gate lets the windows through.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n, dtype=np.float64) / sr
    f = 220 + 80 * np.sin(2 * np.pi * t / 7.0)
    phase = 2 * np.pi * np.cumsum(f) / sr
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 2
    return (0.3 * envelope * np.sin(phase) + 0.005 * rng.standard_normal(n)).astype(np.float32)


def write_long_wav(path: Path, seconds: float, sr: int = SR, block_seconds: float = 60.0) -> Path:
    """A long 16-bit WAV written block by block (memory stays small)."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        done, k = 0.0, 0
        while done < seconds:
            step = min(block_seconds, seconds - done)
            fh.write(tone_noise(step, sr, seed=k))
            done += step
            k += 1
    return path


def encode_av(path: Path, y: np.ndarray, sr: int, container: str, codec: str, *, channels: int = 1,
              video: str | None = None, audio: bool = True) -> Path:
    """Encode with PyAV (FFmpeg): any container/codec pair, optionally with a video track."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=container) as out:
        vs = None
        if video:
            vs = out.add_stream(video, rate=10)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(codec, rate=sr, layout=layout) if audio else None
        if a is not None:
            frame_size = a.codec_context.frame_size or 1024
            data = np.tile(y[:, None], (1, channels)).astype(np.float32)
            fmt = a.codec_context.format.name
            pts = 0
            for s in range(0, len(data), frame_size):
                chunk = data[s:s + frame_size]
                if len(chunk) < frame_size and codec in ("aac", "libopus", "opus", "libmp3lame", "mp3"):
                    chunk = np.pad(chunk, ((0, frame_size - len(chunk)), (0, 0)))
                frame = _audio_frame(av, chunk, fmt, layout, sr)
                frame.pts = pts
                frame.time_base = Fraction(1, sr)
                pts += len(chunk)
                for packet in a.encode(frame):
                    out.mux(packet)
            for packet in a.encode(None):
                out.mux(packet)
        if vs is not None:
            seconds = len(y) / sr
            for i in range(max(1, int(seconds * 10))):
                img = np.full((48, 64, 3), (i * 7) % 255, np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
    return path


def claim_frames(mp3: bytes, frames: int) -> bytes:
    """An MP3 whose Xing/Info header claims ``frames`` MPEG frames (days of audio) it does not hold."""
    i = max(mp3.find(b"Xing"), mp3.find(b"Info"))
    assert i > 0 and int.from_bytes(mp3[i + 4:i + 8], "big") & 1, "no frame count in the Xing/Info header"
    return mp3[:i + 8] + frames.to_bytes(4, "big") + mp3[i + 12:]


def _audio_frame(av, chunk: np.ndarray, fmt: str, layout: str, sr: int):
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "flt":
        arr = chunk.astype(np.float32)
    elif base == "s16":
        arr = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
    elif base == "s32":
        arr = (np.clip(chunk, -1, 1) * 2147483647).astype(np.int32)
    else:
        raise ValueError(f"sample format {fmt} not handled")
    arr = arr.T.copy() if planar else arr.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
    frame.sample_rate = sr
    return frame


def make_all(folder: Path, speech: np.ndarray, *, long_minutes: float = 20.0) -> dict[str, Fixture]:
    """Write every fixture into ``folder``; returns them by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fx: dict[str, Fixture] = {}

    def add(name: str, expect, word: str = "", **kw) -> Path:
        p = folder / name
        fx[name] = Fixture(name, p, expect, word, **kw)
        return p

    rng = np.random.default_rng(7)
    add("empty.wav", E.EmptyAudioError, "empty").write_bytes(b"")
    add("random_bytes.wav", E.UnreadableAudioError, "decod").write_bytes(rng.bytes(48_000))
    buf = io.BytesIO()
    sf.write(buf, speech, SR, format="WAV", subtype="PCM_16")
    add("truncated_header.wav", E.UnreadableAudioError, "decod").write_bytes(buf.getvalue()[:30])
    add("truncated_data.wav", None).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    sf.write(add("header_only.wav", E.EmptyAudioError, "no samples"), np.zeros(0, np.float32), SR)
    add("notes.txt", E.UnsupportedFormatError, "text").write_text(
        "These are my notes about the recording session.\nNothing to hear here.\n" * 20)
    add("text_named.wav", E.UnsupportedFormatError, "text").write_text("RIFF? no, just words in a text file.\n" * 5)
    sf.write(add("short_50ms.wav", E.TooShortError, "ms"), speech[SR: SR + SR // 20], SR)
    sf.write(add("silence.wav", E.SilentAudioError, "silent"), np.zeros(3 * SR, np.float32), SR)
    sf.write(add("dc_offset.wav", E.SilentAudioError, "silent"), np.full(3 * SR, 0.3, np.float32), SR)
    loud = np.clip(speech / max(np.abs(speech).max(), 1e-6) * 8.0, -1.0, 1.0)
    sf.write(add("clipping.wav", None), loud, SR, subtype="PCM_16")
    nan = speech.copy()
    nan[SR: SR + 100] = np.nan
    sf.write(add("nan.wav", E.InvalidSamplesError, "NaN"), nan, SR, subtype="FLOAT")
    inf = speech.copy()
    inf[SR // 2] = np.inf
    inf[SR] = -np.inf
    sf.write(add("inf.wav", E.InvalidSamplesError, "infinite"), inf, SR, subtype="FLOAT")
    sf.write(add("mono_8k.wav", None), resample(speech, 8000), 8000, subtype="PCM_16")
    y44 = resample(speech, 44100)
    sf.write(add("stereo_44k.wav", None), np.stack([y44, 0.5 * y44], axis=1), 44100, subtype="PCM_16")
    sf.write(add("hires_96k_24bit.wav", None), resample(speech, 96000), 96000, subtype="PCM_24")
    sf.write(add("float32.wav", None), speech, SR, subtype="FLOAT")
    sf.write(add("vorbis.ogg", None), speech, SR, format="OGG", subtype="VORBIS")
    y48 = resample(speech, 48000)
    encode_av(add("lame.mp3", None), y44, 44100, "mp3", "libmp3lame")
    encode_av(add("mp3_named.wav", None), y44, 44100, "mp3", "libmp3lame")
    add("lying_header.mp3", None).write_bytes(claim_frames(fx["lame.mp3"].path.read_bytes(), 0x0FFFFFFF))
    encode_av(add("opus.ogg", None), y48, 48000, "ogg", "libopus")
    encode_av(add("opus.webm", None), y48, 48000, "webm", "libopus", channels=2)
    encode_av(add("aac.m4a", None), y44, 44100, "mp4", "aac")
    encode_av(add("video_mpeg4_aac.mp4", None), y44, 44100, "mp4", "aac", video="mpeg4")
    encode_av(add("video_vp8_opus.webm", None), y48, 48000, "webm", "libopus", video="vp8")
    encode_av(add("video_only.mp4", E.NoAudioStreamError, "no audio"), y44, 44100, "mp4", "aac",
              video="mpeg4", audio=False)
    sf.write(add(QUOTED, None), speech, SR, subtype="PCM_16")
    if long_minutes:
        write_long_wav(add(LONG, None), long_minutes * 60)
    assert set(fx) == set(NAMES) - ({LONG} if not long_minutes else set())
    return fx
