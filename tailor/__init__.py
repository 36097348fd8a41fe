"""Tailor: what should this customer see next, and why."""

from tailor.core.errors import TailorError
from tailor.core.models import Customer, Event, EventKind, Item
from tailor.core.settings import Settings

__all__ = ["Customer", "Event", "EventKind", "Item", "Settings", "TailorError"]
__version__ = "0.1.0"
