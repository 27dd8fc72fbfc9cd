"""Train page: pick corpora and a preset, start a training run, watch it live, stop it, promote its model,
and bring your own corpus.

Training runs in a separate process (ser_core.runs.start); this page only reads
the run's files, so it never imports TensorFlow. Checking and storing an uploaded
corpus is the engine's (ser_core.userdata); this page gathers the upload and draws.
"""
from pathlib import Path

import pandas as pd
import streamlit as st

from ser_core import datasets, models, runs, schema, splits, userdata

from ser_app import views
from ser_app.trainform import default_value, option_input
from ser_core.config import public_demo
from ser_core.errors import SERError
from ser_core.jsonio import read_json
from ser_core.trainconfig import PROTOCOL_TITLES, TrainConfig, option_named

MEL_BANDS = (32, 40, 48, 64, 80, 96, 128)
# TrainConfig field -> the form widget that shows it ("{}" = the architecture: those widgets are per architecture).
FIELD_KEYS = {"arch": "t_arch", "protocol": "t_protocol", "epochs": "t_epochs", "batch_size": "t_batch",
              "learning_rate": "t_lr", "patience": "t_patience", "seed": "t_seed", "class_weights": "t_weights",
              "schedule": "t_schedule", "channel_profile": "t_profile", "n_val_speakers": "t_val",
              "label_smoothing": "t_smooth_{}", "mixup": "t_mixup_{}", "online_aug": "t_online_{}",
              "targeted_aug": "t_targeted_{}", "channel_aug": "t_channel_{}",
              "corpus_balance": "t_corpus_balance", "adversary": "t_adversary",
              "corpus_experts": "t_corpus_experts", "balance_within": "t_balance_within"}
# Form widgets that set no TrainConfig field of their own; a preset clears them with the fields' widgets.
OTHER_FORM_KEYS = ("t_corpora", "t_fold_", "t_quick", "t_mels_", "t_extra")
FORM_PREFIXES = OTHER_FORM_KEYS + tuple(key.replace("{}", "") for key in FIELD_KEYS.values())


@st.cache_data(ttl=300, max_entries=8, show_spinner="Reading the corpora...")
def manifest(spec: str) -> pd.DataFrame:
    return datasets.load_dataset(spec)


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def folds_of(spec: str, protocol: str, n_val: int) -> list[tuple[int, str]]:
    return views.fold_choices(manifest(spec), protocol, n_val)


@st.cache_data(ttl=600, show_spinner=False)
def epoch_costs() -> dict:
    return views.epoch_costs()


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


# ----------------------------------------------------------------------------- presets
def apply_preset(preset: views.Preset) -> None:
    """Fill the form from a preset: every form setting back to its default, then the preset's."""
    for key in [k for k in st.session_state if k.startswith(FORM_PREFIXES)]:
        del st.session_state[key]
    settings = preset.settings
    arch = settings.get("arch", "seed000_cnn")
    st.session_state["t_corpora"] = list(preset.corpora)
    st.session_state["t_quick"] = preset.quick
    for field, key in FIELD_KEYS.items():
        if field in settings:
            value = settings[field]
            st.session_state[key.format(arch)] = list(value) if isinstance(value, (list, tuple)) else value
    st.session_state[f"t_fold_{settings.get('protocol', 'emobox6')}"] = int(settings.get("fold", 1))
    features = dict(settings.get("features") or {})
    if "n_mels" in features:
        st.session_state[f"t_mels_{arch}"] = features.pop("n_mels")
    extra = {k: v for k, v in settings.items() if k not in FIELD_KEYS and k not in ("fold", "features")}
    if features:
        extra["features"] = features
    st.session_state["t_extra"] = {"arch": arch, "settings": extra}
    st.session_state["t_preset"] = preset.key


def preset_bar(choices: list[views.DatasetChoice]) -> None:
    found = views.presets(choices)
    if not found:
        return
    if "t_preset" not in st.session_state and found[0].corpora:
        apply_preset(found[0])                   # the form opens on the quick demo, not an hour-long run
    cols = st.columns([1] * len(found) + [4 - len(found)], vertical_alignment="center")
    for col, preset in zip(cols, found):
        col.button(preset.title, key=f"t_preset_{preset.key}", on_click=apply_preset, args=(preset,),
                   help=preset.description, icon=":material/bolt:" if preset.key == "quick" else ":material/tune:",
                   type="primary" if st.session_state.get("t_preset") == preset.key else "secondary",
                   disabled=not preset.corpora)
    chosen = next((p for p in found if p.key == st.session_state.get("t_preset")), None)
    if chosen is not None:
        text = f"Preset **{chosen.title}**: {views.md_escape(chosen.description)}"
        if chosen.missing:
            text += (f" Not under the data root, so left out: {views.md_escape(', '.join(chosen.missing))}.")
        cols[-1].caption(text + " Presets fill in the form; change anything before you start.")


# ----------------------------------------------------------------------------- the form
def pick_corpora(choices: list[views.DatasetChoice]) -> tuple[list[str], str, pd.DataFrame] | None:
    keys = [c.key for c in choices]
    labels = {c.key: c.label for c in choices}
    st.session_state["t_corpora"] = [k for k in st.session_state.get("t_corpora", keys[:1]) if k in keys]
    picked = st.multiselect("Corpora", keys, format_func=lambda k: labels[k], key="t_corpora",
                            help="Every corpus found under the data root (SER_DATA_DIR), your own imported ones, "
                                 "and the bundled samples. Several train together (their dataset spec joined "
                                 "with +).")
    try:
        spec = views.dataset_spec(picked, choices)
        df = manifest(spec)
    except SERError as exc:
        st.warning(views.md_escape(exc))
        return None
    summary = datasets.summary(df)
    st.caption(f"{summary['clips']:,} clips, {summary['speakers']} speakers, emotions: "
               + ", ".join(f"{e} {n}" for e, n in summary["emotions"].items()))
    return picked, spec, df


def clips_with_copies(arch: str, train_clips: int) -> int:
    """Training clips an epoch of ``arch`` goes through: the split's, plus its channel-augmentation copies
    (the form's value for that architecture, else its default)."""
    copies = float(st.session_state.get(f"t_channel_{arch}", default_value("channel_aug", arch)))
    return int(round(train_clips * (1 + copies)))


def arch_label(name: str, costs: dict, train_clips: int) -> str:
    """``ser_crnn · about 2 s an epoch``: the name first, so a narrow box never cuts it off."""
    cost = costs.get(name)
    if cost is None:
        return name
    return f"{name} · about {views.format_seconds(cost.epoch_seconds(clips_with_copies(name, train_clips)))} an epoch"


def new_run_form() -> None:
    choices = views.dataset_choices()
    if not choices:
        st.info("No corpus found: set SER_DATA_DIR to a folder of corpora (ravdess/, ased/, ... or your own) or "
                "restore data/samples.")
        return
    preset_bar(choices)
    picked = pick_corpora(choices)
    if picked is None:
        return
    keys, spec, df = picked
    samples_only = keys == [views.SAMPLES_KEY]
    offered, why = views.protocol_choices(df)
    if st.session_state.get("t_protocol") not in offered:
        st.session_state.pop("t_protocol", None)
    costs = epoch_costs()
    c1, c2, c3 = st.columns([4, 4, 3])
    # each training option's label, help, range and default come from its declaration (ser_core.trainconfig)
    config: dict = {"dataset": spec}
    protocol = config["protocol"] = option_input("protocol", c2, key="t_protocol", choices=tuple(offered))
    n_val_now = int(st.session_state.get("t_val", TrainConfig().n_val_speakers))
    folds = folds_of(spec, protocol, n_val_now)
    if not folds:
        st.warning(f"{PROTOCOL_TITLES.get(protocol, protocol)} has no fold with test clips in this pick.")
        return
    fold_key = f"t_fold_{protocol}"
    if st.session_state.get(fold_key) not in [f for f, _ in folds]:
        st.session_state.pop(fold_key, None)
    names = dict(folds)
    fold_opt = option_named("fold")
    fold = config["fold"] = c3.selectbox(fold_opt.label, [f for f, _ in folds], format_func=lambda f: names[f],
                                         key=fold_key, disabled=len(folds) == 1,
                                         help="The protocol's folds that test clips of this pick.")
    quick_now = bool(st.session_state.get("t_quick", False)) and not samples_only
    part = views.quick_subset(df, views.quick_speakers(protocol, int(fold), df)) if quick_now else df
    try:
        train_clips = len(splits.make_split(part, protocol, int(fold), n_val=n_val_now).train)
    except SERError:
        train_clips = 0
    labels = {name: arch_label(name, costs, train_clips) for name in models.names()}   # fixed for this run
    arch = config["arch"] = option_input("arch", c1, key="t_arch", format_func=labels.__getitem__)
    if why:
        st.caption("Not offered for this pick: " + "; ".join(f"{PROTOCOL_TITLES.get(p, p).split(' (')[0]} {w}"
                                                              for p, w in why.items()) + ".")
    duration_caption(arch, costs, train_clips)
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
        quick = c3.checkbox("Quick run: a few speakers", False, key="t_quick", disabled=samples_only,
                            help="The fold's RAVDESS test actors plus four training actors, and six speakers of "
                                 "every other corpus: a fast smoke test.")
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
        if len(keys) > 1:           # options that only mean something across corpora
            c1, c2, c3, c4 = st.columns(4)
            config["corpus_balance"] = option_input("corpus_balance", c1, key="t_corpus_balance")
            config["balance_within"] = option_input("balance_within", c4, key="t_balance_within")
            config["adversary"] = option_input("adversary", c2, key="t_adversary")
            config["corpus_experts"] = option_input("corpus_experts", c3, key="t_corpus_experts")
        extra = st.session_state.get("t_extra") or {}
        extra = extra.get("settings", {}) if extra.get("arch") == arch else {}
        if extra:
            st.caption("The preset also sets " + views.md_escape(", ".join(f"{k} = {v}" for k, v in extra.items()))
                       + " (kept while the architecture stays the same).")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return
    config = {**extra, **config}
    if mel_bands != base_features.n_mels:
        config["features"] = {**config.get("features", {}), "n_mels": int(mel_bands)}
    if quick and not samples_only:
        config["speakers"] = list(views.quick_speakers(protocol, int(fold), df))
    try:
        TrainConfig.from_dict(config).resolved()
        run_dir = runs.start(config)
    except SERError as exc:
        st.error(views.md_escape(exc))
        return
    st.session_state["t_watch"] = str(run_dir)
    st.toast(f"Started run {run_dir.name}")


def duration_caption(arch: str, costs: dict, train_clips: int) -> None:
    """What a run of these settings should take on this machine, and where the figure comes from."""
    epochs = int(st.session_state.get("t_epochs", default_value("epochs")))
    clips = clips_with_copies(arch, train_clips)
    copies = clips > train_clips
    est = views.duration_estimate(arch, clips, epochs, costs=costs)
    if est is None or not train_clips:
        st.caption(f"No timing measured for {arch} on this machine.")
        return
    early = int(st.session_state.get("t_val", default_value("n_val_speakers"))) > 0
    sooner = " (early stopping may end it sooner)" if early else ""
    st.caption(f"Expected here: about {views.format_seconds(est['per_epoch'])} an epoch on {clips:,} training clips"
               f"{' (channel copies included)' if copies else ''}, so {epochs} epochs take "
               f"{'at most ' if early else ''}about {views.format_seconds(est['seconds'])} with "
               f"{views.format_seconds(est['startup'])} of start-up{sooner}."
               " Measured on a quiet machine: another training running at the same time makes it several times "
               f"slower. Source: {views.md_escape(est['source'])}.")
    with st.expander("Expected duration of each architecture on this machine"):
        st.dataframe(views.durations_frame(costs), hide_index=True)


# ----------------------------------------------------------------------------- progress
def status_message(status: dict, reason: str | None) -> None:
    state, message = status.get("state"), status.get("message", "")
    if state == "failed":
        st.error(f"Run failed: {views.md_escape(message)}")
    elif state == "interrupted":
        st.warning(views.md_escape(message))
    elif state == "stopped":
        st.info(views.md_escape(reason or f"Stopped: {message or 'stopped on request'}"))
    elif state == "finished":
        st.success(views.md_escape(reason or "Finished."))


def test_accuracy(run_dir: Path) -> None:
    """The run's test accuracy (from its metrics.json) next to the curves, with the protocol it was measured on."""
    metrics = read_json(run_dir / schema.METRICS) or {}
    if "accuracy" not in metrics:
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    c1.metric("Test accuracy", views.format_pct(metrics["accuracy"]),
              delta=views.metrics_protocol(metrics), delta_color="off", delta_arrow="off",
              help=f"{metrics.get(schema.PROTOCOL, '')}; {metrics.get('n', '?')} test clips")
    if "uar" in metrics:
        c2.metric("Test UAR", views.format_pct(metrics["uar"]), help="Mean recall over the emotions")
    if not metrics.get(schema.SPEAKER_INDEPENDENT, True):
        c3.warning("Speaker-dependent test: the same voices were in training.")


def progress_panel(run_dir: Path) -> None:
    """Progress, test accuracy, curves and log tail of one run (or cross-validation), refreshed by a fragment
    while it trains; Stop sits outside the fragment so a click never races the fragment's redraw."""
    status = runs.read_status(run_dir)
    config = read_json(run_dir / schema.CONFIG, {}) or {}
    active = status.get("state") in runs.ACTIVE_STATES
    head, button = st.columns([5, 1], vertical_alignment="center")
    kind = "Cross-validation" if views.is_cv_run(config) else "Run"
    head.markdown(f"**{kind} {views.md_escape(run_dir.name)}** · {views.md_escape(config.get('arch', '?'))} on "
                  f"{views.md_escape(views.dataset_title(config.get('dataset', '?')))}")
    if active and button.button("Stop", key="t_stop", icon=":material/stop:"):
        runs.stop(run_dir)
        st.toast("Stop requested: the run ends after its current batch.")
    elif not active and runs.resumable(run_dir) and button.button(
            "Resume", key="t_resume", icon=":material/play_arrow:",
            help="Go on from the last finished epoch, with the same settings, in the same run folder"):
        try:
            runs.resume_run(run_dir)
        except SERError as exc:
            st.error(views.md_escape(str(exc)))
        else:
            st.rerun()

    @st.fragment(run_every=1.5 if active else None)
    def panel():
        runs.reap()
        status = runs.read_status(run_dir)
        state = status.get("state", "?")
        if views.is_cv_run(config):
            cv = views.cv_progress(run_dir, status, config)
            st.progress(cv["fraction"], text=f"{cv['text']} · {state}")
            rows, reason = cv["rows"], views.cv_stop_reason(status, cv)
            if cv["finished"]:
                st.caption("Test accuracy of each finished fold: " + ", ".join(
                    f"fold {f['fold']} {views.format_pct(f['accuracy'])}" for f in cv["finished"]))
        else:
            rows = runs.read_history(run_dir)
            info = views.progress_info(status, rows)
            st.progress(info["fraction"], text=f"{info['text']} · {state}")
            reason = views.stop_reason(status, config, rows)
        status_message(status, reason)
        test_accuracy(run_dir)
        if rows:
            last = rows[-1]
            parts = [f"epoch {last['epoch']}"] + [f"{name} {views.format_pct(last[key])}" for key, name in
                                                  (("accuracy", "train acc"), ("val_accuracy", "val acc"))
                                                  if key in last]
            st.caption("Last " + ", ".join(parts) + f" ({len(rows)} history rows)")
            st.plotly_chart(views.curves_figure(rows), key="t_curves", theme=None)
        elif state in runs.ACTIVE_STATES:
            st.caption("Preparing: loading the dataset and extracting features before the first epoch...")
        with st.expander("Log (last lines)", expanded=state == "failed"):
            st.code(views.log_tail(run_dir) or "(empty)", language=None)
        if active and state not in runs.ACTIVE_STATES:
            st.rerun()          # refresh the Stop button and the runs table, stop polling

    panel()


# ----------------------------------------------------------------------------- your own data
def own_data_section() -> None:
    """Upload a corpus, see what is wrong with it, store it under the data root."""
    done = st.session_state.pop("t_imported", None)
    if done:
        st.success(done)
    try:
        root = userdata.import_root()
    except SERError as exc:
        st.info(views.md_escape(exc))
        return
    st.caption(f"A **zip** with one folder per emotion (`happy/`, `sad/`, ...), or a **CSV** with columns path, "
               f"emotion and optionally speaker and gender: inside the zip with the audio, or on its own with paths "
               f"absolute or relative to the data root. Emotions: {views.md_escape(userdata.accepted_labels_text())}."
               f" Every emotion needs at least {userdata.MIN_CLIPS_PER_CLASS} clips. It is stored as a new corpus "
               f"in {views.md_escape(root)}; existing corpora are never changed. Larger corpora: "
               "`ser data import ZIP_OR_CSV --name NAME`.")
    up = st.file_uploader("Your corpus (zip or CSV)", type=["zip", "csv"], key="t_upload")
    if up is None:
        st.session_state.pop("t_check", None)
        return
    key = (up.file_id, up.name, up.size)
    cached = st.session_state.get("t_check")
    if cached and cached[0] == key:
        result = cached[1]
    else:
        bar = st.progress(0.0, text="Reading the clips...")
        try:
            result = userdata.check(up.getvalue(), filename=up.name, base=root,
                                    progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Checked {d} of {t} clips"))
        except SERError as exc:
            bar.empty()
            st.error(views.md_escape(exc))
            return
        bar.empty()
        st.session_state["t_check"] = (key, result)
    show_check(result)
    if not result.ok:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    name = c1.text_input("Name of the new corpus", value=userdata.suggest_name(up.name, root), key="t_corpus_name",
                         help="Lower-case letters, digits, - and _; it becomes the folder name and the dataset name.")
    if c2.button("Add corpus", key="t_import", type="primary", icon=":material/add:"):
        try:
            dest = userdata.import_checked(result, name, root)
        except SERError as exc:
            st.error(views.md_escape(exc))
            return
        manifest.clear()
        st.session_state.pop("t_check", None)
        st.session_state["t_imported"] = (f"Stored {len(result.clips)} clips as corpus {dest.name} in "
                                          f"{views.md_escape(dest)}: pick it under Corpora above.")
        st.rerun()


def show_check(result: userdata.CheckResult) -> None:
    if result.problems:
        lines = [f"- **{p.kind}**: {views.md_escape(p.message)}" for p in result.problems[:40]]
        if len(result.problems) > 40:
            lines.append(f"- ... and {len(result.problems) - 40} more")
        st.error(f"{len(result.problems)} problem(s) in {views.md_escape(result.source)}; nothing is stored until "
                 "they are fixed:\n\n" + "\n".join(lines))
    for note in result.notes:
        st.warning(views.md_escape(note))
    if result.clips:
        st.caption(views.md_escape(result.summary()))
        st.dataframe(pd.DataFrame([{"emotion": e, "clips": n} for e, n in result.counts.items()]), hide_index=True)


# ----------------------------------------------------------------------------- runs and promotion
def runs_table(any_active: bool) -> None:
    """The table of every run, refreshed while a run trains; the action buttons below stay outside the
    fragment so a click never races its redraw."""

    @st.fragment(run_every=3 if any_active else None)
    def table():
        st.dataframe(views.runs_frame(runs.list_runs()), hide_index=True,
                     column_config={"best val acc": st.column_config.NumberColumn(format="percent"),
                                    "test acc": st.column_config.NumberColumn(format="percent")})

    table()


def confirm_promotion(run_dir: Path) -> None:
    """What promoting replaces, side by side, and the caveats; nothing changes until the user says yes."""
    preview = views.promotion_preview(run_dir)
    now, new = preview["current"], preview["candidate"]
    with st.container(border=True):
        st.markdown(f"**Promote run {views.md_escape(new['name'])}?** The Predict page and `ser predict` will "
                    "use its model instead of the active one.")
        c1, c2 = st.columns(2)
        c1.markdown(f"**Now:** {views.md_escape(now['name'])}  \n{views.md_escape(now['title'])}")
        if now["accuracy"] is not None:
            c1.metric("Accuracy now", views.format_pct(now["accuracy"]),
                      delta=views.short_protocol(now["protocol_info"]),
                      delta_color="off", delta_arrow="off", help=f"{now['protocol']}, {now['n']} clips")
        c2.markdown(f"**After:** run {views.md_escape(new['name'])}  \n{views.md_escape(new['arch'])} on "
                    f"{views.md_escape(views.dataset_title(new['dataset']))}")
        if new["accuracy"] is not None:
            c2.metric("Test accuracy of the run", views.format_pct(new["accuracy"]),
                      delta=views.short_protocol(new["protocol_info"]), delta_color="off", delta_arrow="off",
                      help=f"{new['protocol']}, {new['n']} clips")
        for note in preview["notes"]:
            st.warning(views.md_escape(note))
        b1, b2, _ = st.columns([1, 1, 4])
        if b1.button("Yes, promote", key="t_promote_yes", type="primary"):
            st.session_state.pop("t_confirm", None)
            try:
                runs.promote(run_dir)
            except SERError as exc:
                st.error(views.md_escape(exc))
            else:
                st.rerun()
        if b2.button("Cancel", key="t_promote_no"):
            st.session_state.pop("t_confirm", None)
            st.rerun()


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
                 help="Make this run's model the one the Predict page uses (asks first)."):
        st.session_state["t_confirm"] = str(run_dir)
    if promotable and st.session_state.get("t_confirm") == str(run_dir):
        confirm_promotion(run_dir)


# ----------------------------------------------------------------------------- page
st.title("Train")
if public_demo():
    st.error("This is a public demo: training is switched off.")
    st.stop()
st.caption("Train a model in a background process, on any corpora under the data root. One run trains at a "
           "time; the page follows it live and you can leave and come back.")

# The progress panel sits above the form, in sight while a run trains. It stays in that one place when the
# run ends: moved below the form, the frontend kept the stopped fragment's old panel on screen as well.
above = st.container()
with st.container(border=True):
    st.subheader("New run")
    new_run_form()

watch = watched_run()
if watch is not None:
    running = runs.read_status(watch).get("state") in runs.ACTIVE_STATES
    with above, st.container(border=True):
        st.subheader("Progress" if running else "Last run")
        progress_panel(watch)

with st.expander("Bring your own data", icon=":material/upload_file:"):
    own_data_section()

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
