"""What every backbone shares: ``out_indices`` checking, and ``StagedBackbone`` (frozen leading stages,
BatchNorm kept in eval) for the backbones that list their stages (``stages()``, stem first).

The common backbone arguments mean the same in every backbone:

- ``out_indices``: increasing indices of the outputs to return, finest first, into the backbone's
  list of outputs (its stages, or torchvision's ``features`` indices for VGG and the MobileNets);
  negative indices count from the end. Each backbone's docstring lists its outputs.
- ``frozen_stages``: ``-1`` freezes nothing, ``k`` freezes ``stages()[: k + 1]`` (the stem and the
  first ``k`` stages): no gradients, eval mode kept after ``train()``.
- ``norm_eval``: keep every BatchNorm in eval mode while training (running statistics fixed).
- ``norm``, ``norm_eps``, ``norm_momentum``: the norm layers (:func:`odkit.nn.norm.norm_factory`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from odkit.errors import ConfigError
from odkit.nn.norm import freeze, set_bn_eval


def check_out_indices(out_indices: Sequence[int], n: int, owner: str, outputs: str = "") -> tuple[int, ...]:
    """``out_indices`` as non-negative ints (negative ones count from the end of ``n`` outputs); a
    ``ConfigError`` naming ``owner`` unless they are non-empty, increasing and in range."""
    try:
        raw = [int(i) for i in out_indices]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{owner} out_indices must be integers, got {out_indices!r}") from e
    indices = [i + n if i < 0 else i for i in raw]
    if not indices or indices != sorted(set(indices)) or indices[0] < 0 or indices[-1] >= n:
        where = f" into {outputs}" if outputs else ""
        raise ConfigError(f"{owner} out_indices must be increasing indices{where} (0..{n - 1}, negative from "
                          f"the end), got {list(out_indices)}")
    return tuple(indices)


class StagedBackbone(nn.Module):
    """Mixin: ``frozen_stages = n`` freezes ``stages()[: n + 1]`` (no gradients, eval mode kept);
    ``norm_eval`` keeps every BatchNorm in eval mode while training."""

    frozen_stages: int = -1
    norm_eval: bool = False

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def _set_staging(self, frozen_stages: int, norm_eval: bool) -> None:
        """Check ``frozen_stages`` against ``stages()`` (``ConfigError``), store both and freeze."""
        n = len(self.stages())
        if not -1 <= int(frozen_stages) < n:
            raise ConfigError(f"{type(self).__name__} frozen_stages must be in -1..{n - 1} (the stem and "
                              f"{n - 1} stages), got {frozen_stages}")
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        for stage in self.stages()[: self.frozen_stages + 1]:
            freeze(stage)

    def train(self, mode: bool = True) -> StagedBackbone:
        """Switch train/eval mode, keeping frozen stages (and all BN layers when ``norm_eval``) in eval."""
        super().train(mode)
        if mode:
            for stage in self.stages()[: self.frozen_stages + 1]:
                stage.eval()
            if self.norm_eval:
                set_bn_eval(self)
        return self
