"""Kernel-side part of Sprout's code interpreter, loaded into every Python context.

`setup()` registers two extra display formats the server passes on as the
SDK's `data` (a pandas DataFrame as JSON) and `chart` (what a matplotlib
figure shows, as the SDK's chart types: line, scatter, bar, pie, or a
superchart of several axes). The env helpers set a sandbox's variables and
put a call's back afterwards.
"""

import math
import os

DATA_MIME = "application/vnd.sprout.data+json"
CHART_MIME = "application/vnd.sprout.chart+json"
MAX_DATA_CELLS = 100_000

_saved = []


def set_env(values):
    os.environ.update(values)


def push_env(values):
    _saved.append({k: os.environ.get(k) for k in values})
    os.environ.update(values)


def pop_env():
    if not _saved:
        return
    for k, v in _saved.pop().items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def release_free_memory():
    """Collects garbage and gives malloc's free pages back to the system:
    the env's memory image is taken after this."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def setup():
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    ip = get_ipython()
    if ip is None:
        return
    try:
        ip.run_line_magic("colors", "NoColor")
    except Exception:
        pass

    class JSONFormat(BaseFormatter):
        format_type = Unicode(DATA_MIME)
        print_method = ObjectName("_repr_sprout_data_")
        _return_type = (dict, list)

    class ChartFormat(BaseFormatter):
        """Not through the type registry: matplotlib's inline backend takes
        Figure out of every formatter when it starts."""
        format_type = Unicode(CHART_MIME)
        print_method = ObjectName("_repr_sprout_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            cls = type(obj)
            if not self.enabled or (cls.__module__, cls.__name__) != ("matplotlib.figure", "Figure"):
                return None
            return figure_chart(obj)

    formatters = ip.display_formatter.formatters
    data = formatters.setdefault(DATA_MIME, JSONFormat(parent=ip.display_formatter))
    formatters.setdefault(CHART_MIME, ChartFormat(parent=ip.display_formatter))
    # Only the active types are asked when something is displayed.
    active = ip.display_formatter.active_types
    for mime in (DATA_MIME, CHART_MIME):
        if mime not in active:
            active.append(mime)
    data.for_type_by_name("pandas.core.frame", "DataFrame", dataframe_data)


def dataframe_data(frame):
    if frame.size > MAX_DATA_CELLS:
        return None
    import json

    try:
        return json.loads(frame.to_json(orient="split", date_format="iso", default_handler=str))
    except Exception:
        return None


# --- charts -----------------------------------------------------------------

def _number(value):
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return x if math.isfinite(x) else None


def _label(artist):
    label = artist.get_label() if artist is not None else ""
    return "" if not label or label.startswith("_") else label


def _scale(axis):
    try:
        from matplotlib.dates import DateConverter, ConciseDateConverter, _SwitchableDateConverter
        date_types = (DateConverter, ConciseDateConverter, _SwitchableDateConverter)
    except ImportError:
        from matplotlib.dates import DateConverter
        date_types = (DateConverter,)
    converter = getattr(axis, "converter", None) or getattr(axis, "get_converter", lambda: None)()
    if isinstance(converter, date_types):
        return "datetime"
    if converter is not None and type(converter).__name__ == "StrCategoryConverter":
        return "categorical"
    return axis.get_scale()


def _value(axis, scale, value):
    if scale == "datetime":
        from matplotlib.dates import num2date
        try:
            return num2date(float(value)).isoformat()
        except (TypeError, ValueError, OverflowError):
            return str(value)
    if scale == "categorical":
        names = {v: k for k, v in getattr(axis, "units", None)._mapping.items()} if getattr(axis, "units", None) is not None else {}
        return names.get(int(round(float(value))), _number(value)) if names else _number(value)
    return _number(value)


def _axes_2d(ax, kind):
    x_scale, y_scale = _scale(ax.xaxis), _scale(ax.yaxis)
    return {
        "type": kind,
        "title": ax.get_title() or None,
        "x_label": ax.get_xlabel() or None,
        "y_label": ax.get_ylabel() or None,
        "x_unit": None,
        "y_unit": None,
        "x_scale": x_scale,
        "y_scale": y_scale,
        "x_ticks": [_value(ax.xaxis, x_scale, t) for t in ax.get_xticks()],
        "x_tick_labels": [t.get_text() for t in ax.get_xticklabels()],
        "y_ticks": [_value(ax.yaxis, y_scale, t) for t in ax.get_yticks()],
        "y_tick_labels": [t.get_text() for t in ax.get_yticklabels()],
    }, x_scale, y_scale


def axes_chart(ax):
    from matplotlib.container import BarContainer
    from matplotlib.collections import PathCollection
    from matplotlib.patches import Wedge

    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    if wedges:
        return {
            "type": "pie",
            "title": ax.get_title() or None,
            "elements": [{"label": _label(w), "angle": _number(w.theta2 - w.theta1), "radius": _number(w.r)} for w in wedges],
        }
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        chart, _, _ = _axes_2d(ax, "bar")
        ticks = {round(float(t), 6): lab.get_text() for t, lab in zip(ax.get_xticks(), ax.get_xticklabels())}
        elements = []
        for container in bars:
            group = _label(container)
            for rect in container.patches:
                center = round(float(rect.get_x() + rect.get_width() / 2), 6)
                elements.append({"label": ticks.get(center, str(_number(center))), "group": group, "value": _number(rect.get_height())})
        chart["elements"] = elements
        for key in ("x_ticks", "x_tick_labels", "y_ticks", "y_tick_labels", "x_scale", "y_scale"):
            chart.pop(key)
        return chart
    scatters = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    if scatters and not lines:
        chart, xs, ys = _axes_2d(ax, "scatter")
        chart["elements"] = [{"label": _label(c), "points": [[_value(ax.xaxis, xs, x), _value(ax.yaxis, ys, y)] for x, y in c.get_offsets()]}
                             for c in scatters]
        return chart
    if lines:
        chart, xs, ys = _axes_2d(ax, "line")
        chart["elements"] = [{"label": _label(line), "points": [[_value(ax.xaxis, xs, x), _value(ax.yaxis, ys, y)]
                                                               for x, y in zip(line.get_xdata(), line.get_ydata())]}
                             for line in lines]
        return chart
    return None


def figure_chart(figure):
    try:
        charts = [c for c in (axes_chart(ax) for ax in figure.get_axes() if ax.get_visible()) if c]
    except Exception:
        return None
    if not charts:
        return None
    if len(charts) == 1:
        return charts[0]
    title = figure._suptitle.get_text() if getattr(figure, "_suptitle", None) is not None else None
    return {"type": "superchart", "title": title or None, "elements": charts}
