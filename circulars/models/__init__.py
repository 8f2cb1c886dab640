"""SQLAlchemy 2.0 models; the schema itself comes from migrations/."""

from .base import Base, utcnow
from .circulars import Attachment, Circular, CircularStatus, Counter, circular_lists
from .lists import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from .sends import Delivery, DeliveryStatus, Send, SendStatus, send_lists
from .users import Role, User

__all__ = [
    "Attachment",
    "Base",
    "Circular",
    "CircularStatus",
    "Counter",
    "Delivery",
    "DeliveryStatus",
    "MailingList",
    "Role",
    "Send",
    "SendStatus",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "User",
    "circular_lists",
    "send_lists",
    "utcnow",
]
