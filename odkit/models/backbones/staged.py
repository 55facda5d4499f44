"""``StagedBackbone``: frozen leading stages and BatchNorm kept in eval, shared by the backbones that
list their stages (``stages()``, stem first) and carry ``frozen_stages`` / ``norm_eval``."""

from __future__ import annotations

from torch import nn

from odkit.nn.norm import freeze, set_bn_eval


class StagedBackbone(nn.Module):
    """Mixin: ``frozen_stages = n`` freezes ``stages()[: n + 1]`` (no gradients, eval mode kept);
    ``norm_eval`` keeps every BatchNorm in eval mode while training."""

    frozen_stages: int = -1
    norm_eval: bool = False

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

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
