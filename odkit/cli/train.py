"""``odkit train``: train a detector (single process, or DDP under ``torchrun``).

The flags are generated from the fields of :class:`odkit.engine.config.TrainConfig` (name, type,
help and any extra spelling from each field's metadata). Every flag defaults to "not given", so the
values the user does not pass come from the model's recipe and the data/budget rule
(:mod:`odkit.engine.recipe`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
import typing
from typing import Any

from odkit.cli.args import arg_type, mark_path

log = logging.getLogger(__name__)

DESCRIPTION = """\
Train a detector, from scratch or from existing weights, on a dataset.

DATA takes the forms of `odkit data check`: a COCO json, a VOC root (splits from
ImageSets/Main/<split>.txt), a YOLO data.yaml (its train/val keys), an odkit dataset YAML {format,
train, val, names} or another supported layout. The data check runs first; training refuses to
start on errors it cannot repair and prints the report. A data set without a val split gets a
seeded hold-out split.

Recipe: values not given as flags come from the model's recipe (`odkit.models.zoo.recipe`) and a
rule that adapts it to the data set size and the budget (small data or a short budget: AdamW at a
measured learning rate, bounded warm-up, ...). The effective recipe is printed at the start with
the source and reason of each value, and written to args.yaml. Flags always win.

Fine-tuning: --weights W starts from odkit weights (the model is the weights' own unless --model
says otherwise) or, with --from yolox|torchvision, from a foreign checkpoint; layers whose shape
depends on the class count are re-initialised when the class count differs, and the run lists
them. --pretrained-backbone FILE loads backbone-only weights; --freeze backbone[:N] keeps the
backbone (or its stem and first N stages) fixed. Pickle files are never unpickled beyond
torch.load(weights_only=True); odkit weights are .safetensors only.

Outputs go to <project>/<name>/ (default runs/train): an existing directory is never
overwritten: the run goes to runs/train2, runs/train3, ... instead, unless --exist-ok reuses the
directory as is. Files: args.yaml, metrics.csv, checkpoint.pt (every epoch, atomic),
weights/{best,last}.safetensors + .json sidecars (EMA weights; best by mAP50-95 on val),
predictions.json (COCO results of the best weights on val), plots/*.png.

Distributed: `torchrun --nproc_per_node=N -m odkit train ...` uses DistributedDataParallel
(gloo on CPU, nccl on CUDA); --batch is per process. Each rank predicts its share of the val
images, predictions are all-gathered and rank 0 evaluates the full set.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.set_defaults(func=handler)


class _KeyValues(argparse.Action):
    """``--aug KEY=VALUE [KEY=VALUE ...]`` -> a dict (values parsed as YAML; repeated flags merge)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        import yaml

        out = dict(getattr(namespace, self.dest, None) or {})
        for item in values:
            key, sep, text = str(item).partition("=")
            if not sep or not key:
                parser.error(f"{option_string}: expected KEY=VALUE, got {item!r}")
            try:
                out[key.strip()] = yaml.safe_load(text)
            except yaml.YAMLError as e:
                parser.error(f"{option_string} {item!r}: value is not valid YAML ({e})")
        setattr(namespace, self.dest, out)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; ``list[float]`` stays ``list[float]``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _help(f: dataclasses.Field, hint: Any) -> str:
    text = f.metadata.get("help", "")
    if f.metadata.get("recipe"):
        return text + " (default: the recipe, see above)"
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None or default == "" or hint is bool:
        return text
    return text + f" (default: {default})"


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`TrainConfig` field; every flag defaults to ``None`` (not given)."""
    from odkit.engine.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        flags = list(meta.get("flags") or [f"--{f.name.replace('_', '-')}"])
        hint = _base_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": _help(f, hint)}
        for key in ("metavar", "choices", "nargs", "const"):
            if key in meta:
                kw[key] = meta[key]
        origin = typing.get_origin(hint)
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is dict:
            kw.update(action=_KeyValues, nargs="+")
        elif origin is list:
            kw.update(type=_value_type(meta, typing.get_args(hint)[0]), nargs="+")
        elif hint in (int, float):
            kw["type"] = _value_type(meta, hint)
        action = p.add_argument(*flags, **kw)
        if meta.get("path"):
            mark_path(action, meta["path"])
        for old in meta.get("old_flags") or ():  # an earlier spelling: works, with a warning, not in --help
            p.add_argument(old, **{**kw, "help": argparse.SUPPRESS, "action": _old_flag(flags[0], kw.get("action"))})


def _old_flag(new: str, base: Any) -> type[argparse.Action]:
    """An action that stores like ``base`` (default: store) and warns that the flag is now ``new``."""
    parent = base if isinstance(base, type) else argparse._StoreAction

    class OldFlag(parent):  # type: ignore[misc, valid-type]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            log.warning("%s is deprecated, use %s (the old flag goes in the next release)", option_string, new)
            super().__call__(parser, namespace, values, option_string)

    return OldFlag


def _value_type(meta: Any, hint: Any) -> Any:
    """The argparse ``type=`` of a numeric field: its value rule (``check`` in the metadata, required)."""
    if meta.get("check"):
        return arg_type(meta["check"])
    raise TypeError(f"training option of type {hint.__name__} has no value rule (metadata 'check')")


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` values the user passed on the command line (flags left out are absent)."""
    from odkit.engine.config import TrainConfig

    return {k: getattr(args, k) for k in TrainConfig.field_names() if getattr(args, k, None) is not None}


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Alias of :func:`given_values` (the user's values, to be completed by the recipe)."""
    return given_values(args)


def handler(args: argparse.Namespace) -> int:
    from odkit.engine.api import train
    from odkit.engine.distributed import env_info
    from odkit.errors import ConfigError

    given = given_values(args)
    if not given.get("data") and not given.get("resume"):
        raise ConfigError("odkit train: --data is required (or --resume)")
    result = train(**given)
    if env_info().is_main:
        print(result)
        print(f"best weights: {result.best}\nlast weights: {result.last}")
    return 0
