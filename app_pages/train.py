"""Train page: configure and start a training run, watch it live, stop it, promote its model.

Training runs in a separate process (ser_core.runs.start); this page only reads
the run's files, so it never imports TensorFlow.
"""
from pathlib import Path

import streamlit as st

from ser_core import models, runs, splits

from ser_app import views
from ser_app.trainform import option_input
from ser_core import schema
from ser_core.errors import SERError
from ser_core.trainconfig import TrainConfig

MEL_BANDS = (32, 40, 48, 64, 80, 96, 128)


def watched_run() -> Path | None:
    """The run the progress panel follows: the one started or picked here, else the active or newest run."""
    chosen = st.session_state.get("t_watch")
    if chosen and (Path(chosen) / schema.CONFIG).exists():
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
    # each training option's label, help, range and default come from its declaration (ser_core.trainconfig)
    config: dict = {"dataset": dataset.spec}
    arch = config["arch"] = option_input("arch", c2, key="t_arch")
    protocol = config["protocol"] = option_input("protocol", c3, key="t_protocol", choices=splits.PROTOCOLS)
    n_folds = views.fold_count(protocol)
    config["fold"] = option_input("fold", c4, key=f"t_fold_{protocol}", max_value=n_folds, disabled=n_folds == 1)
    samples_only = dataset.key == "samples"
    with st.form("t_form", border=False, enter_to_submit=False):
        c1, c2, c3, c4 = st.columns(4)
        config["epochs"] = option_input("epochs", c1, key="t_epochs", value=20 if samples_only else None)
        config["batch_size"] = option_input("batch_size", c2, key="t_batch")
        config["learning_rate"] = option_input("learning_rate", c3, key="t_lr")
        config["patience"] = option_input("patience", c4, key="t_patience")
        c1, c2, c3, c4 = st.columns(4)
        config["label_smoothing"] = option_input("label_smoothing", c1, key=f"t_smooth_{arch}", arch=arch)
        config["mixup"] = option_input("mixup", c2, key=f"t_mixup_{arch}", arch=arch)
        config["online_aug"] = option_input("online_aug", c3, key=f"t_online_{arch}", arch=arch)
        config["seed"] = option_input("seed", c4, key="t_seed")
        c1, c2, c3, c4 = st.columns(4)
        config["class_weights"] = option_input("class_weights", c1, key="t_weights")
        config["targeted_aug"] = option_input("targeted_aug", c2, key=f"t_targeted_{arch}", arch=arch)
        quick = c3.checkbox("Quick run: a few actors", False, key="t_quick", disabled=samples_only,
                            help="The fold's test actors plus four training actors: a fast smoke test.")
        config["schedule"] = option_input("schedule", c4, key="t_schedule")
        c1, c2, c3, c4 = st.columns(4)
        config["channel_aug"] = option_input("channel_aug", c1, key=f"t_channel_{arch}", arch=arch)
        config["channel_profile"] = option_input("channel_profile", c2, key="t_profile")
        config["n_val_speakers"] = option_input("n_val_speakers", c3, key="t_val")
        base_features = models.get(arch).features
        mel_bands = base_features.n_mels
        if base_features.kind == "logmel":
            mel_bands = c4.select_slider("Mel bands", sorted({*MEL_BANDS, mel_bands}), value=mel_bands,
                                         key=f"t_mels_{arch}",
                                         help="Frequency resolution of the log-mel input; saved with the model.")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return
    if mel_bands != base_features.n_mels:
        config["features"] = {"n_mels": int(mel_bands)}
    if quick and not samples_only:
        config["speakers"] = list(views.quick_speakers(protocol, config["fold"]))
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
    has_predictions = (run_dir / schema.PREDICTIONS).exists()
    if c3.button("Open in Evaluate", key="t_open", disabled=not has_predictions,
                 help=None if has_predictions else "This run has no test predictions yet."):
        st.session_state["eval_source"] = f"run:{pick}"
        st.switch_page("app_pages/evaluate.py")
    promotable = state in ("finished", "stopped") and (run_dir / schema.MODEL / schema.WEIGHTS).exists()
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
