"""odkit.models.necks."""

from odkit.models.necks.pafpn import PAFPN

__all__ = ["PAFPN"]
