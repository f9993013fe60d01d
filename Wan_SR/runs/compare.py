"""Several methods in one call: ``eval_metrics.py --gt GT --pred A --pred B ... --out DIR``.

Each ``--pred`` (``PATH`` or ``NAME=PATH``; the name defaults to the folder's name, made unique
with its parents' names) is scored exactly as a single ``--pred`` run
(:func:`Wan_SR.runs.evaluate.evaluate`), its JSON written to ``DIR/<name>/metrics_<names>.json``.
Then the table of the per-method averages (the JSONs' ``average``; ``count`` = samples scored)
is written as ``DIR/table_<names>.md`` (Markdown, 4 decimals, best value per metric in bold,
arrows for higher / lower is better), ``.csv`` (full precision) and ``.tex`` (LaTeX tabular,
best in ``\\textbf``). With ``--plots``, per-video curves go to ``DIR/plots/<video>.png``
(:mod:`.plots`); with one ``--pred`` too, next to its JSON.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from Wan_SR.core.distributed import current
from Wan_SR.core.files import write_text_atomic
from .evaluate import output_path, run
from .plots import plot_all

log = logging.getLogger(__name__)


def method_names(preds: list) -> dict[str, Path]:
    """{name: path} of ``PATH`` / ``NAME=PATH`` arguments, in their order; default names are
    the folder names, lengthened with parent folders until they are unique."""
    parsed = []  # (given name or None, path)
    for p in map(str, preds):
        if "=" in p and not Path(p).exists():
            name, path = p.split("=", 1)
            parsed.append((name, Path(path)))
        else:
            parsed.append((None, Path(p)))
    plain = [p for n, p in parsed if n is None]
    for depth in range(1, 9):
        auto = ["/".join(p.resolve().parts[-depth:]) for p in plain]
        if len(set(auto)) == len(auto):
            break
    auto_names = iter(auto)
    out: dict[str, Path] = {}
    for name, path in parsed:
        name = next(auto_names) if name is None else name
        if name in out:
            raise ValueError(f"two methods named '{name}'")
        out[name] = path
    return out


def best(values: dict, lower_better: bool) -> set:
    """The methods with the best value (ties all count)."""
    have = {m: v for m, v in values.items() if v is not None}
    if not have:
        return set()
    target = min(have.values()) if lower_better else max(have.values())
    return {m for m, v in have.items() if v == target}


def _cells(results: dict, names: list) -> tuple[list, dict]:
    rows = []
    winners = {k: best({m: r["average"].get(k) for m, r in results.items()},
                       bool(_lower(results, k))) for k in names}
    for m, r in results.items():
        rows.append((m, r["count"], [r["average"].get(k) for k in names]))
    return rows, winners


def _lower(results: dict, metric: str) -> bool:
    for r in results.values():
        lb = r["settings"].get("lower_better", {})
        if metric in lb:
            return bool(lb[metric])
    return False


def markdown_table(results: dict, names: list) -> str:
    rows, winners = _cells(results, names)
    head = [f"{k} {'↓' if _lower(results, k) else '↑'}" for k in names]
    lines = ["| method | videos | " + " | ".join(head) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for m, count, vals in rows:
        cells = []
        for k, v in zip(names, vals):
            txt = "—" if v is None else f"{v:.4f}"
            cells.append(f"**{txt}**" if m in winners[k] else txt)
        lines.append(f"| {m} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: dict, names: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "videos"] + names)
    for m, count, vals in _cells(results, names)[0]:
        w.writerow([m, count] + ["" if v is None else repr(float(v)) for v in vals])
    return buf.getvalue()


def _tex(s: str) -> str:
    return s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&") \
        .replace("%", "\\%").replace("#", "\\#")


def latex_table(results: dict, names: list) -> str:
    rows, winners = _cells(results, names)
    head = [f"{_tex(k)} $\\{'downarrow' if _lower(results, k) else 'uparrow'}$" for k in names]
    lines = ["\\begin{tabular}{l" + "r" * len(names) + "}", "\\hline",
             "Method & " + " & ".join(head) + " \\\\", "\\hline"]
    for m, _, vals in rows:
        cells = []
        for k, v in zip(names, vals):
            txt = "--" if v is None else f"{v:.4f}"
            cells.append(f"\\textbf{{{txt}}}" if m in winners[k] else txt)
        lines.append(_tex(m) + " & " + " & ".join(cells) + " \\\\")
    return "\n".join(lines + ["\\hline", "\\end{tabular}"]) + "\n"


def write_tables(out: Path, results: dict, names: list) -> list[Path]:
    """``table_<names>.md``, ``.csv``, ``.tex`` in ``out`` (each written atomically)."""
    stem = output_path(out, names).stem.replace("metrics_", "table_", 1)
    paths = []
    for ext, fn in (("md", markdown_table), ("csv", csv_table), ("tex", latex_table)):
        paths.append(write_text_atomic(out / f"{stem}.{ext}", fn(results, names)))
    return paths


def _out_dir(args, preds: dict) -> Path:
    if args.out:
        return Path(args.out)
    parents = [str((p if p.is_dir() else p.parent).resolve().parent) for p in preds.values()]
    return Path(os.path.commonpath(parents))


def _single(args, name: str, path: Path, plots: bool) -> int:
    rc, res = run(args, pred=str(path), curves=plots)
    if plots and res is not None and current().is_main:
        out = Path(res["settings"]["out"]) / "plots"
        for p in plot_all(out, {name: res.get("per_frame", {})}, {name: path}):
            log.info("wrote %s", p)
    return rc


def main(args) -> int:
    """Exit status: 2 when a method could not be scored at all, else 1 when a sample failed,
    else 0."""
    plots = bool(getattr(args, "plots", False))
    preds = list(args.pred) if isinstance(args.pred, (list, tuple)) else [args.pred]
    try:
        methods = method_names(preds)
    except ValueError as e:
        log.error("%s", e)
        return 2
    if len(methods) == 1:
        return _single(args, *next(iter(methods.items())), plots)
    out = _out_dir(args, methods)
    results: dict[str, dict] = {}
    worst = 0
    for name, path in methods.items():
        log.info("method %s: %s", name, path)
        rc, res = run(args, pred=str(path), out=str(out / name), curves=plots)
        worst = max(worst, rc)
        if res is not None:
            results[name] = res
    if not results or not current().is_main:
        return worst
    names = next(iter(results.values()))["settings"]["metrics"]
    for p in write_tables(out, results, names):
        log.info("wrote %s", p)
    print(markdown_table(results, names), end="")
    if plots:
        per_frame = {m: r.get("per_frame", {}) for m, r in results.items()}
        for p in plot_all(out / "plots", per_frame, {m: methods[m] for m in results}):
            log.info("wrote %s", p)
    return worst

