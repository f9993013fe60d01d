"""Argument parsing shared by the scripts: options built from the dataclasses of
:mod:`Wan_SR.core.options` (their defaults and help texts), checks that run before any model
loads, and the logging set-up. Kept free of heavy imports so ``--help`` is fast."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import typing
from pathlib import Path
from typing import Optional

from Wan_SR.core.caches import configure_compile_caches
from Wan_SR.core.log import setup_logging
from Wan_SR.core.options import DeviceOptions, LogOptions, parse_fps

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and shows each default once (after the help text,
    unless the text already speaks of its default, or the default is empty)."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d is argparse.SUPPRESS or d == "":
            return text
        if action.option_strings and action.nargs != 0:
            return text + " (default: %(default)s)"
        return text


def parse_float_list(text: str) -> list[float]:
    """'[599,499,399]' or '599,499,399' -> [599.0, 499.0, 399.0] ('[]' -> [])."""
    text = str(text).strip()
    try:
        val = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
        return [float(v) for v in val]
    except (ValueError, SyntaxError, TypeError):
        raise argparse.ArgumentTypeError(
            f"expected a list of timesteps like [599,499,399], got {text!r}") from None


def _fps_arg(text: str) -> str:
    try:
        parse_fps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


_TYPES = {"int": int, "float": float, "str": str, "Optional[float]": float,
          "Optional[int]": int, "Optional[str]": str, "list": parse_float_list}


def add_options(group, cls, defaults=None, skip: tuple = (), types: Optional[dict] = None,
                bools=None) -> None:
    """One ``--name`` per field of the dataclass ``cls``: help, choices and the value parser
    (``type``) from the field's metadata, the default from ``defaults`` (an instance) or the
    field. ``bool`` fields become flags, or, with ``bools`` (a parser such as str2bool), options
    taking True/False."""
    inst = defaults if defaults is not None else cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = getattr(inst, f.name)
        kw = dict(help=f.metadata.get("help", ""), default=default)
        if f.type == "bool":
            if bools is not None:
                group.add_argument(f"--{f.name}", type=bools, nargs="?", const=True,
                                   metavar="True|False", **kw)
            else:
                group.add_argument(f"--{f.name}", action="store_true", **kw)
            continue
        typ = ((types or {}).get(f.name) or f.metadata.get("type")
               or _TYPES.get(str(f.type), str))
        if f.name == "fps":
            typ = _fps_arg
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        if "const" in f.metadata:  # the option alone means this value
            kw.update(nargs="?", const=f.metadata["const"])
        group.add_argument(f"--{f.name}", type=typ, **kw)


def options_from_args(cls, args):
    """An instance of ``cls`` filled from the parsed arguments of the same names."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if hasattr(args, f.name)})


def config_from_args(cls, args):
    """A config whose fields are option dataclasses (e.g. ``Step1Config``), each filled by
    :func:`options_from_args`."""
    types = typing.get_type_hints(cls)
    return cls(**{f.name: options_from_args(types[f.name], args)
                  for f in dataclasses.fields(cls)})


def add_device_arg(group) -> None:
    add_options(group, DeviceOptions)


def add_log_args(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("logging"), LogOptions)


def setup_from_args(args) -> None:
    setup_logging(args.log_level, progress=not args.no_progress)
    configure_compile_caches()


# ------------------------------------------------------------------ checks before any model loads

def check_input_dir(parser, path, flag: str) -> Path:
    p = Path(path)
    if not p.exists():
        parser.error(f"{flag} {p}: input folder not found")
    if not p.is_dir():
        parser.error(f"{flag} {p}: not a folder")
    return p


def check_writable_dir(parser, path, flag: str, create: bool = True) -> Path:
    """The folder exists (it is created) and a file can be written into it. ``create=False``:
    a missing folder is left missing; the nearest existing folder above must be writable."""
    p = Path(path)
    if not create and not p.exists():
        above = next(a for a in p.absolute().parents if a.exists())
        if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
            parser.error(f"{flag} {p}: cannot create the folder ({above} is not a writable "
                         f"folder)")
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"{flag} {p}: cannot create the folder ({e.strerror or e})")
    if not p.is_dir():
        parser.error(f"{flag} {p}: not a folder")
    # pid and rank: processes of several machines may check one shared folder at once
    probe = p / f".pssr_write_test.{os.getpid()}.{os.environ.get('RANK', '0')}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        parser.error(f"{flag} {p}: not writable ({e.strerror or e})")
    return p


def same_folder(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_device(parser, device) -> None:
    from Wan_SR.core.devices import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as e:
        parser.error(str(e))
