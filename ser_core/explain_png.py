"""The occlusion map of :mod:`ser_core.explain` as a PNG file, drawn with Pillow alone.

No browser, no plotting library: ``ser predict --explain`` writes it, and the app's
"why" view offers it as a download (:mod:`ser_app.explain_views` draws the interactive one).
"""
from __future__ import annotations

import io

import numpy as np

from . import explain

GREY_FLOOR_DB = -80.0          # the mel spectrogram's grey scale runs from here to 0 dB
PNG_HEIGHT = 300               # plot area of the PNG, pixels
PNG_PROFILE = 56               # the strip under it: saliency summed over bands
HZ_TICKS = (125, 250, 500, 1000, 2000, 4000, 8000, 16000)
FOR = np.array([230, 40, 30], np.float32)       # the patch speaks for the answer (occluding it lowers P)
AGAINST = np.array([40, 110, 235], np.float32)  # ... against it (occluding it raises P)


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:                       # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_rgb(expl: explain.Explanation) -> np.ndarray:
    """The map as an RGB image ``(bands, frames, 3)`` uint8, low frequencies at the bottom: the mel
    spectrogram in grey, support blended over it, red for the answer and blue against, by its size."""
    grey = np.clip((expl.mel_db.T - GREY_FLOOR_DB) / -GREY_FLOOR_DB, 0, 1)[::-1] * 200 + 20
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    s = expl.support.T[::-1].astype(np.float32)
    peak = float(np.abs(s).max())
    if peak > 0:
        alpha = 0.9 * np.sqrt(np.abs(s) / peak)[..., None]         # sqrt: weaker patches stay visible
        colour = np.where((s >= 0)[..., None], FOR, AGAINST)
        rgb = rgb * (1 - alpha) + colour * alpha
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _time_ticks(duration: float) -> np.ndarray:
    step = next(s for s in (0.25, 0.5, 1.0, 2.0, 5.0, 10.0) if duration / s <= 12)
    return np.arange(0.0, duration + 1e-9, step)


def saliency_png(expl: explain.Explanation) -> bytes:
    """The map as a PNG: time left to right, low frequencies at the bottom, the voiced stretch between
    dashed lines, and under it the saliency summed over bands per frame."""
    from PIL import Image, ImageDraw

    n_frames = expl.saliency.shape[0]
    width = int(np.clip(n_frames * 6, 480, 1200))
    left, right, top, gap, bottom = 64, 16, 52, 8, 36
    full_w, full_h = left + width + right, top + PNG_HEIGHT + gap + PNG_PROFILE + bottom
    img = Image.new("RGB", (full_w, full_h), "white")
    plot = Image.fromarray(overlay_rgb(expl)).resize((width, PNG_HEIGHT), Image.Resampling.NEAREST)
    img.paste(plot, (left, top))
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    duration = max(float(expl.duration), 1e-6)

    def x_of(t: float) -> float:
        return left + t / duration * width

    prof = expl.time_profile()
    y0 = top + PNG_HEIGHT + gap
    if prof.max() > 0:
        h = prof / prof.max() * (PNG_PROFILE - 2)
        for t, v in zip(expl.times, h):
            draw.rectangle([x_of(t), y0 + PNG_PROFILE - v, x_of(t) + max(width / n_frames, 1), y0 + PNG_PROFILE],
                           fill=(90, 90, 90))
    draw.rectangle([left, top, left + width, top + PNG_HEIGHT], outline="black")
    draw.rectangle([left, y0, left + width, y0 + PNG_PROFILE], outline="black")
    for edge in expl.voiced:                                   # dashed: the stretch the trimming keeps
        x = x_of(edge)
        for yy in range(top, y0 + PNG_PROFILE, 8):
            draw.line([x, yy, x, min(yy + 4, y0 + PNG_PROFILE)], fill=(0, 150, 210), width=2)
    for t in _time_ticks(duration):
        x = x_of(t)
        draw.line([x, y0 + PNG_PROFILE, x, y0 + PNG_PROFILE + 4], fill="black")
        draw.text((x, y0 + PNG_PROFILE + 6), f"{t:g}", fill="black", font=small, anchor="mt")
    draw.text((left + width, full_h - 2), "time (s)", fill="black", font=small, anchor="rd")
    bands = np.arange(len(expl.mel_hz))
    for hz in HZ_TICKS:
        if expl.mel_hz[0] <= hz <= expl.mel_hz[-1]:
            b = float(np.interp(hz, expl.mel_hz, bands))
            y = top + PNG_HEIGHT - (b + 0.5) / len(bands) * PNG_HEIGHT
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((left - 6, y), f"{hz / 1000:g}k" if hz >= 1000 else f"{hz}", fill="black", font=small,
                      anchor="rm")
    draw.text((4, top - 4), "Hz", fill="black", font=small, anchor="ld")
    draw.text((left - 6, y0 + PNG_PROFILE / 2), "sum", fill="black", font=small, anchor="rm")
    title = f"{expl.file}: {expl.emotion} {expl.confidence:.0%}".replace("%", " %")
    sub = (f"occlusion, {expl.grid[0]} x {expl.grid[1]} patches: red speaks for {expl.emotion}, blue against; "
           f"{expl.voiced_mass:.0%} of the saliency inside the voiced stretch (dashed)").replace("%", " %")
    draw.text((left, 6), title, fill="black", font=font)
    draw.text((left, 26), sub, fill=(60, 60, 60), font=small)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
