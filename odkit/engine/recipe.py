"""The effective training recipe: where every ``TrainConfig`` value of a run comes from.

Layers, later ones winning::

    TrainConfig defaults  <-  the model's recipe (odkit.models.zoo.recipe)  <-  the data/budget rule
    (:func:`default_rule`, from the model, the data set size and the budget)  <-  the user's flags /
    keyword arguments

Every value is recorded with its source (``default``, ``model``, ``weights``, ``rule``, ``user``) and a
reason; :meth:`Resolved.describe` is what a run prints at its start and :meth:`Resolved.to_yaml` what
it writes to ``args.yaml``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from odkit.engine.config import TrainConfig
from odkit.errors import ConfigError

log = logging.getLogger(__name__)

# A run is "long" (the model's reference recipe, made for large data sets and long schedules, is used
# as it is) when the data set has at least LONG_IMAGES images and the run at least LONG_ITERS
# iterations (LONG_MINUTES with --time). Everything else gets the small-data rule.
LONG_IMAGES = 5000
LONG_ITERS = 50_000
LONG_MINUTES = 600.0
# AdamW peak lr measured to learn from scratch at batch 16: yolox-nano on BCCD (205 images, 416 px,
# weight decay 0.05, Mosaic 1.0): val mAP50 0.91 in 30 min; it also learned on a 100-image set in
# 12 min, where SGD at 0.01 x 16 / 64 = 0.0025 did not (mAP50 0.013).
ADAMW_LR_AT_16 = 0.008
ADAMW_DECAY = 0.05
LARGE_MODEL_PARAMS = 10_000_000
# Epochs a --time run may plan when the user gives no --epochs: the budget decides.
TIMED_EPOCHS = 1000
# Fields the summary always shows (besides everything not at its default).
SHOWN = ("model", "data", "img_size", "batch", "epochs", "time", "optimizer", "lr", "weight_decay", "schedule",
         "warmup_epochs", "mosaic", "mixup", "no_aug_epochs", "weights", "pretrained_backbone", "freeze")


@dataclass(frozen=True)
class Setting:
    """One value of the effective config: ``source`` is ``default``, ``model``, ``weights``, ``rule``
    or ``user``; ``reason`` says why."""

    value: Any
    source: str
    reason: str = ""


@dataclass(frozen=True)
class RunFacts:
    """What the data/budget rule looks at."""

    model: str
    num_images: int
    batch: int
    epochs: int
    time: float | None
    init: str  # "scratch", "weights" (all weights) or "backbone" (backbone only)
    params: int | None = None
    num_val_images: int | None = None
    model_recipe: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] = field(default_factory=dict)

    @property
    def iters_per_epoch(self) -> int:
        return max(self.num_images // max(self.batch, 1), 1)

    @property
    def long_run(self) -> bool:
        """Large data set and long schedule: the model's reference recipe applies."""
        if self.num_images < LONG_IMAGES:
            return False
        if self.time is not None:
            return self.time >= LONG_MINUTES
        return self.epochs * self.iters_per_epoch >= LONG_ITERS

    def summary(self) -> str:
        budget = f"{self.time:g} min" if self.time else f"{self.epochs} epochs"
        init = {"scratch": "from scratch", "weights": "fine-tuning", "backbone": "pretrained backbone"}[self.init]
        params = f", {self.params / 1e6:.2f}M parameters" if self.params else ""
        return (f"{self.model}{params}, {self.num_images} train images ({self.iters_per_epoch} iterations/epoch "
                f"at batch {self.batch}), {init}, budget {budget}")


def default_rule(f: RunFacts) -> tuple[str, dict[str, tuple[Any, str]]]:
    """The training defaults for a run: ``(regime, {field: (value, reason)})``, only the values the
    rule changes.

    The one place where optimizer, learning rate, warm-up, augmentation strength, the
    no-augmentation tail and the validation interval are chosen from the model, the data set size
    and the budget. Fields the user set (``f.user``, with their values) are inputs here, never outputs.

    - Long runs on large data sets (>= 5000 images and >= 50k iterations, or >= 10 h): the model's
      recipe as it is (it is the reference recipe, tuned for such schedules).
    - Everything else (small data, short budgets):

      * optimizer AdamW with weight decay 0.05 and peak lr 0.008 at batch 16, scaled with
        sqrt(batch / 16) (a quarter of that for models over 10M parameters), instead of a recipe's SGD;
        a model recipe that already uses AdamW keeps its own lr. Fine-tuning all weights uses a
        quarter of the rate, a pretrained backbone half;
      * warm-up: the model's, at most ~300 iterations and (without --time) 20% of the epochs; at most
        one epoch when fine-tuning all weights;
      * Mosaic: the model's probability (on a small set it multiplies the objects and scales seen per
        step); at most 0.5 when fine-tuning for 30 epochs or fewer;
      * no-augmentation tail: the model's, at most 15% of a fixed number of epochs (with --time the
        trainer keeps it under a third of the fitted epochs);
      * validation every N epochs so that it costs about a quarter of the training time (a
        validation image costs about half a training image), when the val set is large next to the
        training set.
    - Either way, with --time and no --epochs the number of epochs follows the budget (up to 1000).
    """
    user = f.user
    recipe = f.model_recipe
    current = {**TrainConfig().to_dict(), **recipe, **user}
    out: dict[str, tuple[Any, str]] = {}
    if f.time is not None and "epochs" not in user:
        out["epochs"] = (TIMED_EPOCHS, "--time given without --epochs: the number of epochs follows the budget")
    if f.long_run:
        regime = (f"long run on a large data set (>= {LONG_IMAGES} images and >= {LONG_ITERS} iterations or "
                  f">= {LONG_MINUTES / 60:g} h): the model's reference recipe")
        return regime, out
    regime = f"small data or short budget (< {LONG_IMAGES} images or < {LONG_ITERS} iterations): small-data rule"
    ipe = f.iters_per_epoch

    # optimizer, lr, weight decay
    init_scale, init_why = {"scratch": (1.0, ""),
                            "weights": (0.25, "; x0.25 when fine-tuning all weights, so they are not washed out"),
                            "backbone": (0.5, "; x0.5 with a pretrained backbone")}[f.init]
    recipe_adamw = recipe.get("optimizer") == "adamw"
    opt = user.get("optimizer", "adamw")
    if "optimizer" not in user and not recipe_adamw:
        out["optimizer"] = ("adamw", "SGD at the reference rate (0.01 per 64 images) needs hundreds of thousands "
                                     "of iterations; from scratch on ~100 images in 12 min it did not learn "
                                     "(mAP50 0.013), AdamW did")
    if opt == "adamw":
        if "lr" not in user:
            if recipe_adamw and recipe.get("lr") is not None:
                lr = float(recipe["lr"]) * init_scale
                why = f"the model's AdamW rate {recipe['lr']:g}{init_why}"
            else:
                big = f.params is not None and f.params > LARGE_MODEL_PARAMS
                base = ADAMW_LR_AT_16 * (0.25 if big else 1.0)
                lr = base * math.sqrt(f.batch / 16) * init_scale
                why = (f"AdamW {base:g} at batch 16 (measured to learn from scratch on 100-200 images"
                       f"{', /4 for models over 10M parameters' if big else ''}), x sqrt(batch/16){init_why}")
            out["lr"] = (_round(lr), why)
        if "weight_decay" not in user and not (recipe_adamw and recipe.get("weight_decay") is not None):
            out["weight_decay"] = (ADAMW_DECAY, "AdamW decoupled decay, as in the measured runs")

    # warm-up
    if "warmup_epochs" not in user:
        w = float(current["warmup_epochs"])
        if f.init == "weights":
            out["warmup_epochs"] = (min(w, 1.0), "fine-tuning trained weights: at most one epoch of warm-up")
        else:
            cap, why = 300 / ipe, f"at most ~300 iterations ({ipe} iterations/epoch)"
            if f.time is None and 0.2 * f.epochs < cap:
                cap, why = 0.2 * f.epochs, f"at most 20% of {f.epochs} epochs"
            if w > cap:
                out["warmup_epochs"] = (_round(cap), f"the model's {w:g} epochs, {why}")

    # augmentation strength
    if "mosaic" not in user:
        m = float(current["mosaic"])
        if f.init == "weights" and f.time is None and f.epochs <= 30 and m > 0.5:
            out["mosaic"] = (0.5, "fine-tuning for 30 epochs or fewer: half the samples stay whole images")

    # no-augmentation tail
    if "no_aug_epochs" not in user and f.time is None:
        tail = int(current["no_aug_epochs"])
        capped = min(tail, max(1, round(0.15 * f.epochs)))
        if tail and capped != tail:
            out["no_aug_epochs"] = (capped, f"the model's tail of {tail}, at most 15% of {f.epochs} epochs")

    # validation interval
    if "val_interval" not in user and f.num_val_images:
        n = min(max(math.ceil(2.0 * f.num_val_images / max(f.num_images, 1)), 1), 10)
        if n > int(current["val_interval"]):
            out["val_interval"] = (n, f"{f.num_val_images} val vs {f.num_images} train images: validating every "
                                      f"{n} epochs keeps it near a quarter of the training time")
    return regime, {k: (v, why) for k, (v, why) in out.items() if current.get(k) != v}


def _round(x: float) -> float:
    return float(f"{x:.4g}")


@dataclass
class Resolved:
    """The effective config of a run and where each value came from."""

    config: TrainConfig
    settings: dict[str, Setting]
    facts: RunFacts | None = None
    regime: str = ""

    def non_default(self) -> dict[str, Setting]:
        """Settings that do not come from the ``TrainConfig`` defaults."""
        return {k: s for k, s in self.settings.items() if s.source != "default"}

    def record(self) -> dict[str, dict[str, Any]]:
        """``{field: {"value", "source", "reason"}}`` of every value not at its default (JSON-able)."""
        return {k: {"value": s.value, "source": s.source, "reason": s.reason} for k, s in self.non_default().items()}

    def describe(self) -> str:
        """The lines a run prints at its start: facts, regime, then one line per shown field."""
        head = "training recipe"
        if self.facts is not None:
            head += f" for {self.facts.summary()}"
        lines = [head + ":"]
        if self.regime:
            lines.append(f"  {self.regime}")
        shown = [k for k in self.settings if k in SHOWN or self.settings[k].source != "default"]
        shown = [k for k in shown if not (self.settings[k].source == "default"
                                          and self.settings[k].value in (None, "", {}, []))]
        width = max(len(k) for k in shown)
        vwidth = min(max(len(_fmt(self.settings[k].value)) for k in shown), 24)
        for k in shown:
            s = self.settings[k]
            why = f"{s.source}" + (f": {s.reason}" if s.reason else "")
            lines.append(f"  {k:<{width}}  {_fmt(s.value):<{vwidth}}  {why}")
        return "\n".join(lines)

    def to_yaml(self) -> str:
        """``args.yaml`` text: every field of the config, each non-default one with a comment naming
        its source and reason (the file loads back with ``yaml.safe_load`` into ``TrainConfig``)."""
        out = []
        for k, v in self.config.to_dict().items():
            text = yaml.safe_dump({k: v}, default_flow_style=True, sort_keys=False, width=10**6).strip()
            text = text[1:-1] if text.startswith("{") and text.endswith("}") else text
            s = self.settings.get(k)
            if s is not None and s.source != "default":
                reason = (s.source + (f": {s.reason}" if s.reason else "")).replace("\n", " ")
                text += f"  # {reason}"
            out.append(text)
        return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def model_recipe(name: str, batch: int | None = None) -> dict[str, Any]:
    """The zoo recipe of ``name`` as ``TrainConfig`` field values.

    A recipe's ``lr_per_image`` becomes ``lr = lr_per_image * batch`` (the linear scaling rule; ``batch``
    defaults to the recipe's or ``TrainConfig``'s); other keys that are not training options are
    logged and ignored."""
    from odkit.models import zoo

    rec = dict(zoo.recipe(name))
    per_image = rec.pop("lr_per_image", None)
    names = set(TrainConfig.field_names())
    extra = sorted(set(rec) - names)
    if extra:
        log.debug("recipe of %s: keys %s are not training options; ignored", name, extra)
    out = {k: v for k, v in rec.items() if k in names}
    if per_image is not None and out.get("lr") is None:
        b = int(batch if batch is not None else out.get("batch", TrainConfig.batch))
        out["lr"] = _round(float(per_image) * b)
    return out


def _zoo_recipe(name: str) -> dict[str, Any]:
    from odkit.models import zoo

    return dict(zoo.recipe(name))


def complete(cfg: TrainConfig) -> Resolved:
    """A :class:`Resolved` for a complete ``TrainConfig`` given as it is (every value is the user's
    unless equal to the default)."""
    defaults = TrainConfig()
    settings = {}
    for f in fields(TrainConfig):
        v = getattr(cfg, f.name)
        same = v == getattr(defaults, f.name)
        settings[f.name] = Setting(v, "default" if same else "user", "" if same else "TrainConfig")
    return Resolved(cfg, settings, regime="complete TrainConfig: used as given")


def resolve(
    user: Mapping[str, Any],
    num_images: int | None = None,
    params: int | None = None,
    weights_model: str | None = None,
    num_val_images: int | None = None,
) -> Resolved:
    """The effective config for the user's values ``user`` (flags / keyword arguments actually given).

    ``weights_model``: the model named by ``--weights`` (used when ``user`` has no ``model``).
    ``num_images`` / ``num_val_images`` (training / validation images) and ``params`` (the model's
    parameter count) feed the rule of
    :func:`default_rule`; without ``num_images`` the rule is skipped (a preliminary config, enough to
    load data and build the model).
    """
    user = dict(user)
    TrainConfig.check_names(user)
    defaults = TrainConfig().to_dict()
    settings: dict[str, Setting] = {k: Setting(v, "default") for k, v in defaults.items()}
    model = user.get("model")
    if model is None and weights_model is not None:
        model = weights_model
        settings["model"] = Setting(model, "weights", "the model the --weights were trained as")
    model = model or defaults["model"]
    if weights_model is not None and model != weights_model:
        raise ConfigError(f"--weights hold a {weights_model!r} model but --model is {model!r}; drop --model "
                          f"or pass weights of {model!r}")
    raw = dict(_zoo_recipe(model))
    batch = user.get("batch", raw.get("batch", defaults["batch"]))
    recipe = model_recipe(model, batch)
    for k, v in recipe.items():
        why = f"{model}'s recipe"
        if k == "lr" and raw.get("lr") is None and raw.get("lr_per_image") is not None:
            why += f" ({raw['lr_per_image']:g} per image x batch {batch})"
        settings[k] = Setting(v, "model", why)
    values = {k: s.value for k, s in settings.items()}
    values.update(user)
    regime = ""
    facts = None
    if num_images is not None:
        init = "weights" if values.get("weights") else "backbone" if values.get("pretrained_backbone") else "scratch"
        facts = RunFacts(model=model, num_images=int(num_images), batch=int(values["batch"]),
                         epochs=int(values["epochs"]), time=values["time"], init=init, params=params,
                         num_val_images=num_val_images, model_recipe=recipe, user=dict(user))
        regime, rule = default_rule(facts)
        for k, (v, why) in rule.items():
            settings[k] = Setting(v, "rule", why)
    for k, v in user.items():
        settings[k] = Setting(v, "user", "given")
    try:
        cfg = TrainConfig(**{k: s.value for k, s in settings.items()})
    except TypeError as e:
        raise ConfigError(f"bad training options: {e}") from e
    if facts is not None:  # make the automatic lr and weight decay explicit numbers
        if cfg.lr is None:
            base = "0.01" if cfg.optimizer == "sgd" else "0.002"
            cfg.lr = _round(cfg.base_lr)
            settings["lr"] = Setting(cfg.lr, settings["lr"].source, f"{base} x batch / 64 for {cfg.optimizer}")
        if cfg.weight_decay is None:
            cfg.weight_decay = cfg.decay
            settings["weight_decay"] = Setting(cfg.weight_decay, settings["weight_decay"].source,
                                               f"{cfg.optimizer} default")
    return Resolved(cfg, settings, facts, regime)
