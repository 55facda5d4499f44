"""odkit.models.backbones."""

from odkit.models.backbones.csp_darknet import CSPDarknet
from odkit.models.backbones.darknet19 import Darknet19
from odkit.models.backbones.efficientnet import EfficientNet
from odkit.models.backbones.mobilenet_v1 import MobileNetV1
from odkit.models.backbones.mobilenet_v2 import MobileNetV2
from odkit.models.backbones.mobilenet_v3 import MobileNetV3
from odkit.models.backbones.repvgg import RepVGG
from odkit.models.backbones.vgg import VGG

__all__ = ["CSPDarknet", "Darknet19", "EfficientNet", "MobileNetV1", "MobileNetV2", "MobileNetV3", "RepVGG", "VGG"]
