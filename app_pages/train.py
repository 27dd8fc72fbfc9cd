"""Train page: configure and start a training run, watch it live, stop it, promote its model.

Training runs in a separate process (ser_core.runs.start); this page only reads
the run's files, so it never imports TensorFlow.
"""
from pathlib import Path

import streamlit as st

from ser_core import models, runs, splits

from ser_app import views
from ser_core.channel import CHANNEL_PROFILES, profiles_help
from ser_core.errors import SERError
from ser_core.training import ONLINE_AUGS, TrainConfig

PROTOCOL_TITLES = {
    "emobox6": "EmoBox 6-fold (speaker-independent)",
    "speaker_kfold": "Speaker 5-fold (speaker-independent)",
    "random": "Random clips (speaker-DEPENDENT)",
}
AUG_TITLES = {"time_mask": "time masking", "freq_mask": "frequency masking",
              "brightness_contrast": "brightness / contrast"}
BATCH_SIZES = (8, 16, 32, 64, 128)
LEARNING_RATES = (1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3)
MEL_BANDS = (32, 40, 48, 64, 80, 96, 128)


def watched_run() -> Path | None:
    """The run the progress panel follows: the one started or picked here, else the active or newest run."""
    chosen = st.session_state.get("t_watch")
    if chosen and (Path(chosen) / "config.json").exists():
        return Path(chosen)
    active = runs.active_run()
    if active:
        return Path(active["dir"])
    listed = runs.list_runs()
    return Path(listed[0]["dir"]) if listed else None


def new_run_form() -> None:
    choices = views.dataset_choices()
    if not choices:
        st.info("No dataset found: set SER_DATA_DIR to the RAVDESS folder or restore data/samples.")
        return
    c1, c2, c3, c4 = st.columns([3, 3, 3, 1])
    dataset = c1.selectbox("Dataset", choices, format_func=lambda c: c.label, key="t_dataset",
                           help="Only the configured RAVDESS folder (SER_DATA_DIR) and the bundled samples.")
    arch_name = c2.selectbox("Architecture", models.names(), key="t_arch",
                             format_func=lambda n: f"{models.get(n).title} ({n})")
    protocol = c3.selectbox("Protocol", splits.PROTOCOLS, format_func=lambda p: PROTOCOL_TITLES.get(p, p),
                            key="t_protocol")
    n_folds = views.fold_count(protocol)
    fold = c4.number_input("Fold", 1, n_folds, 1, key=f"t_fold_{protocol}", disabled=n_folds == 1)
    defaults = models.get(arch_name).train_defaults
    samples_only = dataset.key == "samples"
    with st.form("t_form", border=False, enter_to_submit=False):
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 500, 20 if samples_only else 60, key="t_epochs")
        batch = c2.select_slider("Batch size", BATCH_SIZES, value=32, key="t_batch")
        lr = c3.select_slider("Learning rate", LEARNING_RATES, value=1e-3, format_func=lambda v: f"{v:g}",
                              key="t_lr")
        patience = c4.number_input("Early-stopping patience", 1, 500, 15, key="t_patience",
                                   help="Stop when validation accuracy has not improved for this many epochs.")
        c1, c2, c3, c4 = st.columns(4)
        smoothing = c1.slider("Label smoothing", 0.0, 0.3, float(defaults.get("label_smoothing", 0.0)), 0.05,
                              key=f"t_smooth_{arch_name}")
        mixup = c2.slider("Mixup alpha (0 = off)", 0.0, 0.4, float(defaults.get("mixup", 0.0)), 0.1,
                          key=f"t_mixup_{arch_name}")
        online = c3.multiselect("Online augmentation", ONLINE_AUGS, default=list(defaults.get("online_aug", ())),
                                format_func=lambda a: AUG_TITLES.get(a, a), key=f"t_online_{arch_name}")
        seed = c4.number_input("Seed", 0, 10_000, 0, key="t_seed")
        c1, c2, c3, c4 = st.columns(4)
        weights = c1.checkbox("Class weights", True, key="t_weights",
                              help="Weight the loss so rare emotions (neutral) count as much as the others.")
        targeted = c2.checkbox("Targeted augmentation", bool(defaults.get("targeted_aug", True)),
                               key=f"t_targeted_{arch_name}",
                               help="Noisy, gain-shifted and masked copies of minority-class clips.")
        quick = c3.checkbox("Quick run: a few actors", False, key="t_quick", disabled=samples_only,
                            help="The fold's test actors plus four training actors: a fast smoke test.")
        schedule = c4.selectbox("Learning-rate schedule", ("plateau", "cosine"), key="t_schedule",
                                format_func=lambda s: {"plateau": "halve on plateau", "cosine": "cosine decay"}[s],
                                help="Halve the rate when validation loss stalls, or warm up for two epochs and "
                                     "decay along a cosine to 1 % by the last epoch.")
        c1, c2, c3, c4 = st.columns(4)
        channel_aug = c1.slider("Channel augmentation", 0.0, 2.0, float(defaults.get("channel_aug", 0.0)), 0.1,
                                key=f"t_channel_{arch_name}",
                                help="Extra training copies per clip through a random room, background noise, "
                                     "microphone and codec (1.0 doubles the training set; training actors only).")
        profile = c2.selectbox("Background noise in those copies", tuple(CHANNEL_PROFILES), key="t_profile",
                               help="How many of the copies get background noise (babble of other training "
                                    "actors or white noise) and how loud: " + profiles_help() + ".")
        n_val = c3.number_input("Validation actors", 0, 6, 2, key="t_val",
                                help="Training actors held out for early stopping. 0 trains on all of them and "
                                     "keeps the last epoch (the shipped recipe).")
        base_features = models.get(arch_name).features
        mel_bands = base_features.n_mels
        if base_features.kind == "logmel":
            mel_bands = c4.select_slider("Mel bands", sorted({*MEL_BANDS, mel_bands}), value=mel_bands,
                                         key=f"t_mels_{arch_name}",
                                         help="Frequency resolution of the log-mel input; saved with the model.")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return
    config = {"dataset": dataset.spec, "arch": arch_name, "protocol": protocol, "fold": int(fold),
              "epochs": int(epochs), "batch_size": int(batch), "learning_rate": float(lr),
              "label_smoothing": float(smoothing), "mixup": float(mixup), "online_aug": list(online),
              "class_weights": bool(weights), "targeted_aug": bool(targeted), "patience": int(patience),
              "seed": int(seed), "schedule": schedule, "channel_aug": float(channel_aug),
              "channel_profile": profile, "n_val_speakers": int(n_val)}
    if mel_bands != base_features.n_mels:
        config["features"] = {"n_mels": int(mel_bands)}
    if quick and not samples_only:
        config["speakers"] = list(views.quick_speakers(protocol, int(fold)))
    try:
        TrainConfig.from_dict(config).resolved()
        run_dir = runs.start(config)
    except SERError as exc:
        st.error(views.md_escape(exc))
        return
    st.session_state["t_watch"] = str(run_dir)
    st.toast(f"Started run {run_dir.name}")


def status_message(status: dict) -> None:
    state, message = status.get("state"), status.get("message", "")
    if state == "failed":
        st.error(f"Run failed: {views.md_escape(message)}")
    elif state == "interrupted":
        st.warning(views.md_escape(message))
    elif state == "stopped":
        st.info(f"Stopped: {views.md_escape(message or 'stopped on request')}")
    elif state == "finished":
        st.success("Finished.")


def progress_panel(run_dir: Path) -> None:
    """Curves, progress and log tail of one run, refreshed by a fragment while it trains; Stop sits outside
    the fragment so a click never races the fragment's redraw."""
    status = runs.read_status(run_dir)
    active = status.get("state") in runs.ACTIVE_STATES
    head, button = st.columns([5, 1], vertical_alignment="center")
    head.markdown(f"**Run {views.md_escape(run_dir.name)}**")
    if active and button.button("Stop", key="t_stop", icon=":material/stop:"):
        runs.stop(run_dir)
        st.toast("Stop requested: the run ends after its current batch.")

    @st.fragment(run_every=1.5 if active else None)
    def panel():
        runs.reap()
        status = runs.read_status(run_dir)
        rows = runs.read_history(run_dir)
        state = status.get("state", "?")
        info = views.progress_info(status, rows)
        st.progress(info["fraction"], text=f"{info['text']} · {state}")
        if rows:
            last = rows[-1]
            parts = [f"epoch {last['epoch']}"] + [f"{name} {views.format_pct(last[key])}" for key, name in
                                                  (("accuracy", "train acc"), ("val_accuracy", "val acc"))
                                                  if key in last]
            st.caption("Last " + ", ".join(parts) + f" ({len(rows)} history rows)")
            st.plotly_chart(views.curves_figure(rows), key="t_curves", theme=None)
        elif state in runs.ACTIVE_STATES:
            st.caption("Preparing: loading the dataset and extracting features before the first epoch...")
        status_message(status)
        with st.expander("Log (last lines)", expanded=state == "failed"):
            st.code(views.log_tail(run_dir) or "(empty)", language=None)
        if active and state not in runs.ACTIVE_STATES:
            st.rerun()          # refresh the Stop button and the runs table, stop polling

    panel()


def runs_table(any_active: bool) -> None:
    """The table of every run, refreshed while a run trains; the action buttons below stay outside the
    fragment so a click never races its redraw."""

    @st.fragment(run_every=3 if any_active else None)
    def table():
        st.dataframe(views.runs_frame(runs.list_runs()), hide_index=True,
                     column_config={"best val acc": st.column_config.NumberColumn(format="percent"),
                                    "test acc": st.column_config.NumberColumn(format="percent")})

    table()


def runs_section(run_list: list[dict]) -> None:
    runs_table(any(r["status"].get("state") in runs.ACTIVE_STATES for r in run_list))
    by_id = {r["id"]: r for r in run_list}
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    pick = c1.selectbox("Run", list(by_id), key="t_pick")
    run = by_id[pick]
    run_dir = Path(run["dir"])
    state = run["status"].get("state")
    if c2.button("Show progress", key="t_show"):
        st.session_state["t_watch"] = str(run_dir)
        st.rerun()
    has_predictions = (run_dir / "predictions.csv").exists()
    if c3.button("Open in Evaluate", key="t_open", disabled=not has_predictions,
                 help=None if has_predictions else "This run has no test predictions yet."):
        st.session_state["eval_source"] = f"run:{pick}"
        st.switch_page("app_pages/evaluate.py")
    promotable = state in ("finished", "stopped") and (run_dir / "model" / "model.keras").exists()
    if c4.button("Promote", key="t_promote", type="primary", disabled=not promotable,
                 help="Make this run's model the one the Predict page uses."):
        try:
            runs.promote(run_dir)
        except SERError as exc:
            st.error(views.md_escape(exc))
        else:
            st.rerun()


st.title("Train")
st.caption("Train a model on RAVDESS in a background process. One run trains at a time; "
           "the page follows it live and you can leave and come back.")

with st.container(border=True):
    st.subheader("New run")
    new_run_form()

watch = watched_run()
if watch is not None:
    with st.container(border=True):
        st.subheader("Progress")
        progress_panel(watch)

st.subheader("All runs")
all_runs = runs.list_runs()
if all_runs:
    runs_section(all_runs)
else:
    st.caption("No runs yet.")

active_model = runs.active_model_dir()
if active_model.resolve() != runs.default_model_dir().resolve():
    st.caption(f"The app predicts with promoted model {views.md_escape(active_model.name)}.")
    if st.button("Go back to the shipped default model", key="t_reset"):
        runs.reset_active()
        st.rerun()
