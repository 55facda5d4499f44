"""odkit.models.backbones."""

from odkit.models.backbones.csp_darknet import CSPDarknet

__all__ = ["CSPDarknet"]
