"""Predict page: record, upload, pick a sample or stream live; see what the model hears and decides."""
import hashlib
import sys
from pathlib import Path

import streamlit as st

from ser_app import explain_views, views
from ser_app.session_model import session_model_dir
from ser_core import schema
from ser_core.config import max_audio_seconds
from ser_core.errors import (NoAudioStreamError, SERError, SilentAudioError, UnreadableAudioError,
                             UnsupportedFormatError)
from ser_core.predict import one_mood_note, settled_answer

MAX_UPLOAD_MB = int(st.get_option("server.maxUploadSize"))
SOURCES = ("Record", "Upload", "Sample clip", "Live")
SETUP = "Many clips of one setup"          # the adapted mode: shown when the model has an adapted probe


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def load_predictor(model_dir: str, stamp: float):
    """One predictor per model folder and version (``stamp`` changes when a run is promoted)."""
    from ser_core.predict import load_predictor

    return load_predictor(model_dir)


def session_predictor():
    from ser_core.modeldir import model_files

    model_dir = session_model_dir()
    stamp = max(f.stat().st_mtime for f in model_files(model_dir))
    return load_predictor(str(model_dir), stamp)


UNDECODABLE_HINT = ("Save or export it as WAV, FLAC, MP3, Ogg/Opus, WebM or M4A and upload that, or record "
                    "the phrase again here.")


def recording_key(predictor, data: bytes, name: str) -> tuple:
    """(SHA-1 of the audio, its name, the model folder): what a cached analysis belongs to."""
    return hashlib.sha1(data).hexdigest(), name, str(predictor.model_dir)


def result_for(predictor, data: bytes, name: str, key: tuple):
    """The analysis of these bytes (an ``Analysis``), reused across reruns (downloads, tab switches) while
    ``key`` (:func:`recording_key`) stays the same."""
    cached = st.session_state.get("p_result")
    if cached and cached[0] == key:
        return cached[1]
    try:
        with st.spinner("Analysing..."):
            res = predictor.analyse(data, name=name, whole=True)   # whole: the page draws the waveform
    except SilentAudioError as exc:
        st.error(f"No speech detected: {views.md_escape(exc)}")
        return None
    except (UnreadableAudioError, UnsupportedFormatError, NoAudioStreamError) as exc:
        st.error(f"{views.md_escape(exc)}. {UNDECODABLE_HINT}")
        return None
    except SERError as exc:
        st.error(views.md_escape(exc))
        return None
    st.session_state["p_result"] = (key, res)
    return res


def answer_label(text: str) -> str:
    """'not sure: sad or neutral' -> 'Not sure: sad or neutral'; emotion names stay as the model spells them."""
    from ser_core.calibration import NOT_SURE

    return NOT_SURE.capitalize() + text[len(NOT_SURE):] if text.startswith(NOT_SURE) else text


def recent_answers(predictor, digest: str | None = None, best: str | None = None) -> list[str]:
    """This session's answers with this model, one per recording, oldest first; ``digest`` (the recording's
    SHA-1) and ``best``: note one more recording's answer first (the same audio shown again, after a rerun or
    under another name, is not counted twice)."""
    answers = st.session_state.setdefault("p_answers", {}).setdefault(str(predictor.model_dir), {})
    if digest is not None and best is not None:
        answers.setdefault(digest, best)
    return list(answers.values())


def show_result(res, predictor, model: dict, settled: tuple[str, int, int] | None = None) -> None:
    pred, y, cfg = res.prediction, res.waveform, predictor.cfg
    left, right = st.columns([2, 3], gap="large")
    with left:
        if not pred.speech:
            st.warning("No speech detected: the recording is silent or too quiet. Record closer to the "
                       "microphone, or pick a clip with someone speaking.")
        else:
            c1, c2 = st.columns([3, 2])
            c1.metric("Emotion", answer_label(pred.summary()))
            c2.metric("Confidence", views.format_pct(pred.confidence))
            if pred.unfamiliar:
                st.caption(f"This recording sounds unlike every recording the model learnt from (novelty "
                           f"{pred.novelty:.1f}, above its limit of {predictor.gate.threshold:.1f}: microphone, "
                           "room, language or voice). Its answers on such recordings are mostly wrong, so it "
                           "names its two most likely emotions instead of one.")
            elif pred.not_sure:
                st.caption(f"The model's calibrated confidence is below its threshold "
                           f"({views.format_pct(predictor.calibration.threshold)}), so it names its two most "
                           "likely emotions instead of one.")
            if settled:
                st.warning(views.settled_text(*settled), icon=":material/repeat:")
            st.plotly_chart(views.probability_figure(pred.probabilities, pred.best), key="p_probs",
                            theme=None)
            st.caption(f"{pred.duration:.1f} s of audio in {len(pred.windows)} window(s) of {cfg.duration:.0f} s; "
                       "probabilities are averaged over the windows that hold speech.")
            stem = Path(pred.file).stem[:60] or "audio"
            d1, d2 = st.columns(2)
            d1.download_button("Result as JSON", views.prediction_json(pred, model),
                               file_name=f"{stem}-emotion.json", mime="application/json",
                               icon=":material/download:", width="stretch")
            d2.download_button("Result as CSV", views.prediction_csv(pred), file_name=f"{stem}-emotion.csv",
                               mime="text/csv", icon=":material/download:", width="stretch")
    with right:
        tabs = ["Waveform", "Mel spectrogram", "Model input"] + (["Timeline"] if len(pred.windows) > 1 else [])
        for tab, name in zip(st.tabs(tabs), tabs):
            with tab:
                if name == "Waveform":
                    st.plotly_chart(views.waveform_figure(y, res.sample_rate), key="p_wave", theme=None)
                elif name == "Mel spectrogram":
                    st.plotly_chart(views.mel_figure(y, cfg), key="p_mel", theme=None)
                elif name == "Model input":
                    show_model_input(res.inputs)
                else:
                    st.plotly_chart(views.timeline_figure(pred.windows, predictor.labels), key="p_timeline",
                                    theme=None)
                    st.dataframe(views.windows_frame(pred.windows), hide_index=True)


def show_model_input(inputs: list) -> None:
    """What each network of the model sees (an ensemble has several)."""
    if not inputs:
        st.info("No speech, so no network was asked.")
        return
    shown = inputs[0]
    if len(inputs) > 1:
        names = [m.name for m in inputs]
        shown = inputs[names.index(st.selectbox("Network", names, key="p_input_member"))]
    st.plotly_chart(views.model_input_figure(shown.x, shown.features), key="p_input", theme=None)
    if shown.name == schema.PROBE_ARCH:
        st.caption(f"What the linear layer reads: Whisper's encoder summed up over the first window, "
                   f"{shown.x.size} values (the mean and spread of its output over the window's frames), "
                   "standardised with the training clips' statistics.")
    else:
        st.caption(f"What the network sees: the first window's features {tuple(shown.x.shape)}, "
                   "normalised with the training-set statistics stored in its spec.json.")


def live_mode(predictor) -> None:
    """Stream the microphone over WebRTC; classify the last 3 s about once a second."""
    if "pylibsrtp" not in sys.modules and "tensorflow" in sys.modules:
        st.error("Live mode is unavailable in this server process (its WebRTC library must load before "
                 "TensorFlow). Restart the app with `streamlit run streamlit_app.py`.")
        return
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    from ser_core.errors import AudioError
    from ser_core.live import LiveSession

    session = st.session_state.setdefault("p_live", LiveSession(seconds=3.0, every=1.0))

    async def on_frames(frames):
        for frame in frames:
            try:
                session.push_frame(frame)
            except AudioError:
                continue
        return frames

    st.caption("Press START and allow the microphone. The last 3 s are classified once per second of audio "
               "received; the panel refreshes every second (later when the machine is busy). A stretch that is "
               "mostly silence reads \"no speech\".")
    ctx = webrtc_streamer(key="p_live_rtc", mode=WebRtcMode.SENDONLY, rtc_configuration={"iceServers": []},
                          media_stream_constraints={"audio": True, "video": False},
                          queued_audio_frames_callback=on_frames)
    playing = bool(ctx.state.playing)
    if playing and not st.session_state.get("p_live_was_playing"):
        session.reset()
    st.session_state["p_live_was_playing"] = playing

    @st.fragment(run_every=1.0 if playing else None)
    def live_panel():
        session.step(predictor)
        latest = session.latest
        if latest is None:
            st.info("Listening: the first answer comes after a second of audio." if session.receiving()
                    else "Connecting to the microphone...")
            return
        c1, c2, c3 = st.columns(3)
        c1.metric("Current emotion", answer_label(latest.summary))
        c2.metric("Confidence", views.format_pct(latest.confidence) if latest.emotion else "-")
        c3.metric("Streamed", f"{latest.time:.0f} s")
        st.plotly_chart(views.live_figure(session.timeline, predictor.labels), key="p_live_chart",
                        theme=None)

    if playing or session.latest is not None:
        live_panel()
    else:
        st.info("Not streaming: press START to listen.")


def adapted_probe(predictor):
    """The model's probe adapted to a recording setup, or None (not a probe, or a probe without one)."""
    try:
        return getattr(predictor, "adapted", None)
    except SERError as exc:
        st.warning(f"The model's adapted mode cannot be read: {views.md_escape(exc)}")
        return None


def setup_mode(predictor, probe) -> None:
    """Many clips of one recording setup, each read by the adapted probe after standardising them by the setup's
    own clips (``ProbePredictor.predict_adapted``)."""
    from ser_core.adapt import REFERENCE_CLIPS

    figures = probe.record.get("figures", {}).get("loco", {})
    heard = ", ".join(f"{c.upper()} {100 * v['own_accuracy']:.0f} %" for c, v in figures.items())
    st.caption(f"Upload at least {REFERENCE_CLIPS} recordings made the same way (one microphone, room or call "
               "line; several speakers are fine). The model first learns what this setup does to speech from "
               "all of them, unlabelled, then reads each clip. The clips should hold the setup's ordinary mix of "
               "speech: twenty clips of one emotion would take that emotion out. One person's own recordings "
               "count as a setup too when they hold a mix of emotions; recordings mostly in one mood are better "
               "read one clip at a time (docs/multicorpus.md, session 40)."
               + (f" Leaving each corpus out of training and adapting to it this way, it was right on {heard} "
                  "of its clips (its own emotions)." if heard else ""))
    ups = st.file_uploader(f"Audio files of one setup ({', '.join(views.UPLOAD_TYPES)}; "
                           f"{REFERENCE_CLIPS} or more)", type=list(views.UPLOAD_TYPES), key="p_setup",
                           accept_multiple_files=True, max_upload_size=MAX_UPLOAD_MB)
    if not ups:
        return
    names = [Path(u.name).name[:80] for u in ups]
    data = [u.getvalue() for u in ups]
    key = (hashlib.sha1(b"".join(hashlib.sha1(d).digest() for d in data)).hexdigest(), tuple(names),
           str(predictor.model_dir))
    cached = st.session_state.get("p_setup_result")
    if cached and cached[0] == key:
        answers, n_ref = cached[1]
    else:
        try:
            with st.spinner(f"Listening to {len(data)} clips..."):
                answers, n_ref = predictor.predict_adapted(data, names)
        except SERError as exc:
            st.error(views.md_escape(exc))
            return
        st.session_state["p_setup_result"] = (key, (answers, n_ref))
    frame = views.setup_frame(answers, names)
    st.success(f"Adapted to this setup: its {n_ref} clips with speech are the reference.")
    unread = int((frame["answer"] == "unreadable").sum())
    if unread:
        st.warning(f"{unread} file(s) could not be read; their rows say why. The others were answered.")
    note = one_mood_note(answers)
    if note:
        st.warning(note)
    left, right = st.columns([2, 3], gap="large")
    left.plotly_chart(views.answer_share_figure(frame), key="p_setup_chart", theme=None)
    shown = frame[[c for c in ("file", "answer", "confidence", "one clip at a time", "problem") if c in frame]]
    right.dataframe(shown, hide_index=True, key="p_setup_table")
    st.download_button("Answers as CSV", frame.to_csv(index=False), file_name="setup-emotions.csv",
                       mime="text/csv", icon=":material/download:")


st.title("Predict")
st.caption("Which of eight emotions does a speaker express? Record, upload, pick a sample clip or stream live; "
           "the model named in the sidebar answers.")

try:
    predictor = session_predictor()
except SERError as exc:
    st.error(f"The model cannot be loaded: {views.md_escape(exc)}")
    st.stop()
model = views.model_summary(predictor.model_dir)
limit = max_audio_seconds()

adapted = adapted_probe(predictor)
source = st.segmented_control("Audio source", SOURCES + ((SETUP,) if adapted is not None else ()),
                              default=SOURCES[0], required=True, key="p_source")
data, name = None, None
if source == "Record":
    rec = st.audio_input("Record a short phrase (3-5 s works best)", sample_rate=16000, key="p_record")
    if rec is not None:
        data, name = rec.getvalue(), "recording.wav"
elif source == "Upload":
    up = st.file_uploader(f"Audio file ({', '.join(views.UPLOAD_TYPES)}; up to {MAX_UPLOAD_MB} MB and "
                          f"{limit / 60:.0f} min)", type=list(views.UPLOAD_TYPES), key="p_upload",
                          max_upload_size=MAX_UPLOAD_MB)
    if up is not None:
        raw = up.getvalue()
        shown = Path(up.name).name[:80]
        if len(raw) > MAX_UPLOAD_MB * 1024 * 1024:
            st.error(f"{views.md_escape(shown)} is over the {MAX_UPLOAD_MB} MB upload limit.")
        else:
            data, name = raw, shown
elif source == "Sample clip":
    clips = views.sample_clips()
    if not clips:
        st.info("No sample clips found in data/samples.")
    else:
        clip = st.selectbox("Sample clip (RAVDESS, actors 1-4)", clips, format_func=views.sample_label,
                            key="p_sample")
        data, name = clip.read_bytes(), clip.name
elif source == SETUP:
    setup_mode(predictor, adapted)
else:
    live_mode(predictor)

if data is not None:
    key = recording_key(predictor, data, name)
    result = result_for(predictor, data, name, key)
    if result is not None:
        if source != "Record":
            st.audio(data, format=views.mime_for(name))
        answers = recent_answers(predictor, key[0], result.prediction.best)
        show_result(result, predictor, model, settled_answer(answers))
        explain_views.why_panel(predictor, result.waveform, result.prediction)   # occlusion map, codec comparison
