"""Kernel-side part of Sprout's code interpreter, loaded into every Python context.

`setup()` registers two extra display formats the server passes on as the
SDK's `data` (a pandas DataFrame, column by column) and `chart` (what a
matplotlib figure shows, read the way E2B's interpreter reads it: line,
scatter, bar, pie, box and whisker, unknown, or a superchart of several
axes), and makes images display as E2B's do (a PIL image saved to a file
or shown). The env helpers set a sandbox's variables and put a call's back
afterwards.
"""

import decimal
import math
import os
import re

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
    _images_display()


def _images_display():
    """A PIL image shown, or saved to a path, is displayed as the cell's
    PNG, as in E2B's interpreter (there is no screen to show it on)."""
    try:
        from PIL import Image, ImageShow
    except ImportError:
        return
    from IPython.display import display

    class Viewer(ImageShow.Viewer):
        def show(self, image, **options):
            display(image)
            return 1

    ImageShow._viewers[:] = [Viewer()]
    original_save = Image.Image.save

    def save(image, fp, format=None, **params):
        if isinstance(fp, (str, bytes, os.PathLike)):
            display(image)
        return original_save(image, fp, format, **params)

    Image.Image.save = save


def dataframe_data(frame):
    """A DataFrame column by column, as E2B gives it: {column: [values]}
    (times in ISO 8601; NaN as null)."""
    if frame.size > MAX_DATA_CELLS:
        return None
    import json

    try:
        split = json.loads(frame.to_json(orient="split", date_format="iso", default_handler=str))
    except Exception:
        return None
    columns = [str(c) for c in split["columns"]]
    return {name: [row[i] for row in split["data"]] for i, name in enumerate(columns)}


# --- charts -----------------------------------------------------------------
# Read the way E2B's interpreter reads a matplotlib figure, so that charts
# carry the same types and fields: what kind of artists an axes holds
# decides its type, and each type reads its own data.

UNIT = re.compile(r"\s\((.*?)\)|\[(.*?)\]")


def _rounded(number):
    """To eight significant digits (keeps 0.1 + 0.2 from showing as 0.30000000000000004)."""
    value = decimal.Decimal(str(number))
    with decimal.localcontext() as ctx:
        ctx.prec = max(1, 8 - value.adjusted())
        return float(+value)


def _plain(value):
    """A JSON-friendly value: dates as ISO 8601, numpy scalars as Python ones."""
    import datetime

    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    try:
        import numpy
        if isinstance(value, numpy.datetime64):
            return str(value.astype("datetime64[s]"))
        if isinstance(value, numpy.generic):
            value = value.item()
    except ImportError:
        pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_grid_line(line):
    x, y = line.get_xdata(), line.get_ydata()
    return len(x) == 2 and len(y) == 2 and (x[0] == x[1] or y[0] == y[1])


def _chart_type(ax):
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch, Rectangle, Wedge
    from matplotlib.text import Text

    children = [c for c in ax._children if not isinstance(c, Text)]
    if all(isinstance(c, Line2D) for c in children):
        return "line"
    if all(isinstance(c, (PathPatch, Line2D)) for c in children):
        return "box_and_whisker"
    children = [c for c in children if not (isinstance(c, Line2D) and _is_grid_line(c))]
    if all(isinstance(c, PathCollection) for c in children):
        return "scatter"
    if all(isinstance(c, Wedge) for c in children):
        return "pie"
    if all(isinstance(c, Rectangle) for c in children):
        return "bar"
    return "unknown"


def _labels(ax, chart):
    chart["x_label"] = ax.get_xlabel() or None
    chart["y_label"] = ax.get_ylabel() or None
    for axis in ("x", "y"):
        label = chart[axis + "_label"]
        match = UNIT.search(label) if label else None
        chart[axis + "_unit"] = (match.group(1) or match.group(2)) if match else None


def _swap_axes(chart):
    for a, b in (("x_label", "y_label"), ("x_unit", "y_unit")):
        chart[a], chart[b] = chart[b], chart[a]


def _is_date_converter(converter):
    try:
        from matplotlib.dates import _SwitchableDateConverter
    except ImportError:
        from matplotlib.dates import DateConverter as _SwitchableDateConverter
    return isinstance(converter, _SwitchableDateConverter)


def _ticks(axis, ticks):
    if _is_date_converter(axis.converter):
        from matplotlib.dates import num2date
        return [num2date(t).isoformat() for t in ticks]
    return [float(t) for t in ticks]


def _scale(axis, scale, ticks, labels):
    if _is_date_converter(axis.converter):
        return "datetime"
    if scale != "linear":
        return scale
    # Ticks 0..n-1 labelled with other names: categories.
    for i, (tick, label) in enumerate(zip(ticks, labels)):
        if not (isinstance(tick, (int, float)) and tick == i and str(i) != label):
            return "linear"
    return "categorical"


def _point_chart(ax, chart):
    for axis_name, axis, scale in (("x", ax.xaxis, ax.get_xscale()), ("y", ax.yaxis, ax.get_yscale())):
        labels = [t.get_text() for t in axis.get_ticklabels()]
        ticks = _ticks(axis, axis.get_ticklocs())
        chart[axis_name + "_ticks"] = ticks
        chart[axis_name + "_tick_labels"] = labels
        chart[axis_name + "_scale"] = _scale(axis, scale, ticks, labels)


def _points(xs, ys):
    return [[_plain(x), _plain(y)] for x, y in zip(xs, ys)]


def _bar_elements(ax, chart):
    elements = []
    for container in ax.containers:
        group = container.get_label()
        if group.startswith("_container"):
            group = "Group %d" % int(group[len("_container"):])
        heights = [rect.get_height() for rect in container]
        if all(h == heights[0] for h in heights):
            # Equal heights: horizontal bars, whose values are their widths.
            _swap_axes(chart)
            labels = [t.get_text() for t in ax.get_yticklabels()]
            values = [rect.get_width() for rect in container]
        else:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            values = heights
        elements += [{"label": label, "group": group, "value": _plain(value)} for label, value in zip(labels, values)]
    return elements


def _box_elements(ax, chart):
    labels = [t.get_text() for t in ax.get_xticklabels()]
    boxes = []
    for label, patch in zip(labels, ax.patches):
        vertices = patch.get_path().vertices
        xs = [_rounded(v) for v in vertices[:, 0]]
        ys = [_rounded(v) for v in vertices[:, 1]]
        boxes.append({"label": label, "x": min(xs), "y": min(ys), "width": max(xs) - min(xs), "height": max(ys) - min(ys), "outliers": []})
    if not boxes:
        return []
    vertical = all(box["height"] == boxes[0]["height"] for box in boxes)
    if vertical:
        _swap_axes(chart)
        for box in boxes:
            box["x"], box["y"], box["width"], box["height"] = box["y"], box["x"], box["height"], box["width"]
    for line in ax.lines:
        xs = [_rounded(v) for v in line.get_xdata()]
        ys = [_rounded(v) for v in line.get_ydata()]
        if vertical:
            xs, ys = ys, xs
        if len(xs) == 1:
            owner = next((b for b in boxes if b["x"] <= xs[0] <= b["x"] + b["width"]), None)
            if owner is not None:
                owner["outliers"].append(ys[0])
            continue
        if len(ys) != 2:
            continue
        owner = next((b for b in boxes if b["x"] <= xs[0] <= xs[1] <= b["x"] + b["width"]), None)
        if owner is None:
            continue
        if ys[0] == ys[1] and owner["y"] <= ys[0] <= owner["y"] + owner["height"]:
            owner["median"] = ys[0]
            continue
        low, high = min(ys), max(ys)
        if high == owner["y"]:
            owner["min"] = low
        elif low == owner["y"] + owner["height"]:
            owner["max"] = high
    return [{"label": b["label"], "min": b.get("min"), "first_quartile": b["y"], "median": b.get("median"),
             "third_quartile": b["y"] + b["height"], "max": b.get("max"), "outliers": b["outliers"]} for b in boxes]


def axes_chart(ax):
    kind = _chart_type(ax)
    chart = {"type": kind, "title": ax.get_title() or None, "elements": []}
    if kind in ("line", "scatter", "bar", "box_and_whisker"):
        _labels(ax, chart)
    if kind == "line":
        _point_chart(ax, chart)
        for line in ax.get_lines():
            if _is_grid_line(line):
                continue
            label = line.get_label()
            if label.startswith("_child"):
                label = "Line %d" % int(label[len("_child"):])
            chart["elements"].append({"label": label, "points": _points(line.get_xdata(), line.get_ydata())})
    elif kind == "scatter":
        _point_chart(ax, chart)
        for collection in ax.collections:
            offsets = collection.get_offsets()
            chart["elements"].append({"label": collection.get_label(), "points": _points(offsets[:, 0], offsets[:, 1])})
    elif kind == "bar":
        chart["elements"] = _bar_elements(ax, chart)
    elif kind == "box_and_whisker":
        chart["elements"] = _box_elements(ax, chart)
    elif kind == "pie":
        chart["elements"] = [{"label": w.get_label(), "angle": abs(_rounded(float(w.theta2) - float(w.theta1))), "radius": _plain(w.r)}
                             for w in ax.patches]
    return chart


def figure_chart(figure):
    axes = figure.get_axes()
    if not axes or not any(ax.has_data() for ax in axes):
        return None
    try:
        if len(axes) > 1:
            title = figure.get_suptitle() if hasattr(figure, "get_suptitle") else (
                figure._suptitle.get_text() if getattr(figure, "_suptitle", None) is not None else "")
            return {"type": "superchart", "title": title or None, "elements": [axes_chart(ax) for ax in axes]}
        return axes_chart(axes[0])
    except Exception:
        return None
