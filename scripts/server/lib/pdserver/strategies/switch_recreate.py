"""`switch: recreate`: web and proxy are recreated in place, for layouts the slots cannot
serve; the short restart is measured (recreate.py)."""

from ..recreate import Recreate as Strategy

__all__ = ["Strategy"]
