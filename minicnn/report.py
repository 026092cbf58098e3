"""The cost table of ``minicnn.summary`` as text: an aligned table, Markdown or CSV.

``summary(..., format="dict")`` returns the numbers (a report dict); the functions here only
lay them out, so a new format is a new function of the report, nothing else.
"""
import csv
import io

from minicnn.flops import CATEGORIES

COLUMNS = ("name", "type", "channels", "kernel", "stride", "pad", "groups", "out C",
           "out H×W", "#act", "#params", "FLOPs", "act mem", "param mem", "RF", "jump")


def _pair_text(pair):
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def _cells(row):
    shape = row["output_shape"]
    hw = f"{shape[1]}×{shape[2]}" if len(shape) == 3 else ""
    conv_like = row["kernel"] is not None or row["layers"] > 1 and row["name"] != "total"
    channels = f"{row['in_channels']}→{row['out_channels']}" if conv_like else ""
    return [row["name"], row["type"] + (f" ({row['layers']} layers)" if row["layers"] > 1
                                        and row["name"] != "total" else ""),
            channels, "" if row["kernel"] is None else "×".join(map(str, row["kernel"])),
            _pair_text(row["stride"]),
            _pair_text(row["padding"]), "" if row["groups"] in (None, 1) else str(row["groups"]),
            "" if row["out_channels"] is None else str(row["out_channels"]), hw,
            f"{row['activations']:,}", f"{row['params']:,}", f"{row['flops']:,}",
            _bytes(row["activation_bytes"]), _bytes(row["param_bytes"]),
            _field_text(row["receptive_field"]), _field_text(row["jump"])]


def _field_text(value):
    return "" if value is None else value if isinstance(value, str) else _pair_text(value)


def _bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def _flops_text(n):
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def render_table(report, markdown=False):
    """The report as an aligned text table (or a Markdown one), with its footer."""
    rows = [_cells(r) for r in report["rows"]]
    total = _cells(report["total"])
    total[1] = ""
    numeric = set(range(9, 14))
    title = (f"{report['model']}: input {'×'.join(map(str, report['input_shape']))}, "
             f"batch {report['batch_size']}")
    if markdown:
        line = lambda cells: "| " + " | ".join(cells) + " |"
        rule = "|" + "|".join("---:" if i in numeric else "---" for i in range(len(COLUMNS))) + "|"
        lines = [f"**{title}**", "", line(list(COLUMNS)), rule]
        lines += [line(r) for r in rows]
        lines.append(line([f"**{v}**" if v else v for v in total]))
        lines.append("")
    else:
        table = [list(COLUMNS)] + rows + [total]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        fmt = lambda cells: "  ".join(v.rjust(widths[i]) if i in numeric or i >= 14 else
                                      v.ljust(widths[i]) for i, v in enumerate(cells)).rstrip()
        rule = "-" * len(fmt(list(COLUMNS)))
        lines = [title, rule, fmt(list(COLUMNS)), rule] + [fmt(r) for r in rows]
        lines += [rule, fmt(total), rule]
    lines += _footer(report)
    return "\n".join(lines)


def _footer(report):
    B = report["batch_size"]
    total = report["total"]
    by_category = total["flops_by_category"]
    counted = ", ".join(f"{c} {_flops_text(by_category[c])}" for c in report["count"])
    uncounted = ", ".join(f"{c} {_flops_text(v)}" for c, v in report["uncounted_flops"].items())
    act = total["activation_bytes"]
    par = total["param_bytes"]
    lines = [
        f"FLOPs (forward, batch {B}, multiply-add = 2): {_flops_text(total['flops'])} = {counted}.",
        f"Not in the FLOPs column (pass count= to include): {uncounted}. Residual additions "
        f"and concatenations are functional operations, not layers: no row, only the "
        f"'add' total.",
        f"Memory rule of thumb (float32, training): activations 2·B·Σ#act·4 B = {_bytes(act)}, "
        f"parameters 3·Σ#params·4 B = {_bytes(par)}, total {_bytes(act + par)}.",
        f"Parameters: {total['params']:,}.",
    ]
    if report["unused_params"]:
        lines.append(f"Not used by this forward pass (e.g. auxiliary classifiers in eval "
                     f"mode), so in no row: {report['unused_params']:,} parameters.")
    measured = report["measured"]
    if measured:
        ratio = measured["peak_bytes"] / max(1, measured["estimate_bytes"])
        lines.append(
            f"Measured training step at batch {measured['batch_size']}: peak "
            f"{_bytes(measured['peak_bytes'])} (parameters and buffers "
            f"{_bytes(measured['resident_bytes'])} + {measured['measured_by']} "
            f"{_bytes(measured['step_peak_bytes'])}) vs rule of thumb "
            f"{_bytes(measured['estimate_bytes'])} (ratio {ratio:.2f}); "
            + (f"peak RSS grew by {_bytes(measured['rss_growth_bytes'])}; "
               if measured["rss_growth_bytes"] is not None else "")
            + f"{measured['seconds']:.2f} s.")
    return lines


def render_csv(report):
    """The report's rows and total as CSV, one column per number (FLOPs by category too)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["name", "type", "layers", "in_channels", "out_channels", "kernel_h", "kernel_w",
            "stride_h", "stride_w", "pad_h", "pad_w", "groups", "out_c", "out_h", "out_w",
            "activations", "params", "flops"] + [f"flops_{c}" for c in CATEGORIES] + [
            "activation_bytes", "param_bytes", "rf_h", "rf_w", "jump_h", "jump_w"]
    writer.writerow(head)
    for row in report["rows"] + [report["total"]]:
        shape = tuple(row["output_shape"]) + ("",) * 3
        pair = lambda p: ("", "") if p is None else (p, p) if isinstance(p, str) else p
        field, jump = pair(row["receptive_field"]), pair(row["jump"])
        writer.writerow([row["name"], row["type"], row["layers"],
                         _blank(row["in_channels"]), _blank(row["out_channels"]),
                         *pair(row["kernel"]), *pair(row["stride"]), *pair(row["padding"]),
                         _blank(row["groups"]), *shape[:3], row["activations"], row["params"],
                         row["flops"], *[row["flops_by_category"][c] for c in CATEGORIES],
                         row["activation_bytes"], row["param_bytes"], *field, *jump])
    return buffer.getvalue()


def _blank(value):
    return "" if value is None else value
