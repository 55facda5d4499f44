"""odkit.nn: convolution blocks shared by the detectors (ConvBNAct, DWConv, Focus, SPP, SPPF, CSPLayer)."""

from odkit.nn.blocks import SPP, SPPF, Bottleneck, CSPLayer, Focus
from odkit.nn.conv import (
    BN_EPS,
    BN_MOMENTUM,
    ConvBNAct,
    DWConv,
    conv_or_dw,
    make_act,
    scale_depth,
    scale_width,
)

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "SPP",
    "SPPF",
    "Bottleneck",
    "CSPLayer",
    "ConvBNAct",
    "DWConv",
    "Focus",
    "conv_or_dw",
    "make_act",
    "scale_depth",
    "scale_width",
]
