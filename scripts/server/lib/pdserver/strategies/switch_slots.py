"""`switch: slots` (the default): the new version starts beside the old one in the idle
slot, proves healthy, and traffic moves between two requests (slots.py)."""

from ..slots import Slots as Strategy

__all__ = ["Strategy"]
