"""Compile librosa's numba functions once, into librosa's own cache, right after the venv is set up.

The tests and the benchmark compare the project's features with librosa's (the seeds' path). librosa
JIT-compiles its helpers on first use and caches them beside its sources; on a fresh machine every pytest
worker would compile them at once (about 20 s each, and two processes compiling into one cache can
corrupt it: a SIGSEGV). One process compiling them here, before any worker starts, avoids both.
"""
import time

import numpy as np


def main() -> None:
    import librosa

    t = time.perf_counter()
    sr = 16000
    y = np.random.default_rng(0).normal(scale=0.1, size=sr).astype(np.float32)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    power = mag ** 2
    mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=64))
    librosa.feature.mfcc(S=mel, n_mfcc=13)
    librosa.feature.delta(mel)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr)
    librosa.estimate_tuning(S=power, sr=sr)
    librosa.feature.spectral_contrast(S=mag, sr=sr)
    librosa.feature.tonnetz(chroma=chroma, sr=sr)
    librosa.feature.zero_crossing_rate(y)
    librosa.feature.rms(y=y)
    librosa.util.normalize(chroma)
    librosa.resample(y, orig_sr=sr, target_sr=8000)
    print(f"librosa's numba cache is warm ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
