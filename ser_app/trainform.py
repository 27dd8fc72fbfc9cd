"""Form widgets for training options, built from their one declaration (TrainConfig's fields).

The page lays the widgets out and names their keys; the label, the help, the choices and how
they read, the range and the default come from :mod:`ser_core.trainconfig`, so the form and
``ser train`` cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ser_core.trainconfig import TrainConfig, arch_defaults, option_named


def default_value(name: str, arch: str | None = None) -> Any:
    """What the form starts at: TrainConfig's default, or ``arch``'s for the options it sets."""
    opt = option_named(name)
    if opt.from_arch:
        if arch is None:
            raise ValueError(f"the default of {name} depends on the architecture; pass arch")
        return arch_defaults(arch)[name]
    return getattr(TrainConfig(), name)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def option_input(name: str, where, *, key: str, arch: str | None = None, value: Any = None, choices: tuple | None = None,
                 max_value: float | None = None, disabled: bool = False,
                 format_func: Callable[[Any], str] | None = None) -> Any:
    """One widget for the training option ``name`` in ``where`` (a Streamlit container or column).

    Parameters
    ----------
    key
        The widget's session-state key (the page's: keys carry the architecture where the
        default does).
    arch
        The chosen architecture, whose training defaults fill the options it sets (needed for
        those options only).
    value
        A starting value other than the default (e.g. fewer epochs on the sample clips).
    choices, max_value
        A narrower offer than the declaration's (the protocols that test, the folds there are).
    format_func
        How a choice reads, when the page shows more than the declaration's title (e.g. the
        architecture's name first, with its epoch time here, so a narrow box never cuts the name off).

    Returns
    -------
    The widget's value, as TrainConfig takes it (lists for tuples).
    """
    opt = option_named(name)
    start = default_value(name, arch) if value is None else value
    label, help_text = opt.label, _sentence(opt.help)
    common = {"key": key, "help": help_text, "disabled": disabled}
    offered = tuple(choices) if choices is not None else opt.choices
    if opt.kind == "bool":
        return where.checkbox(label, bool(start), **common)
    if opt.kind == "strs" and offered:
        return where.multiselect(label, offered, default=list(start or ()), format_func=opt.title, **common)
    if offered:
        index = offered.index(start) if start in offered else 0
        return where.selectbox(label, offered, index=index, format_func=format_func or opt.title, **common)
    picks = opt.meta.get("picks")
    if picks:
        values = sorted({*picks, start})
        return where.select_slider(label, values, value=start, format_func=lambda v: f"{v:g}", **common)
    span = opt.meta.get("span") or (opt.meta.get("min", 0), max_value)
    low, high = span[0], span[1] if max_value is None else max_value
    if high is None:
        raise ValueError(f"training option {name} declares no span or picks for a form; pass max_value")
    if opt.kind == "float":
        step = span[2] if len(span) > 2 else None
        return where.slider(label, float(low), float(high), float(start), step, **common)
    return int(where.number_input(label, int(low), int(high), int(start), **common))
