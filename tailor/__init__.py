"""Tailor: what should this customer see next, and why."""

from tailor.errors import TailorError
from tailor.models import Customer, Event, EventKind, Item
from tailor.settings import Settings

__all__ = ["Customer", "Event", "EventKind", "Item", "Settings", "TailorError"]
__version__ = "0.1.0"
