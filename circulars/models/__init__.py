"""SQLAlchemy 2.0 models; the schema itself comes from migrations/."""

from .base import Base, utcnow
from .bounces import Bounce, BounceKind, BounceSource
from .branding import BRANDING_ROW_ID, BrandingLogo, BrandingSettings
from .circulars import (
    Attachment,
    Circular,
    CircularStatus,
    CircularTranslation,
    Counter,
    Version,
    circular_lists,
)
from .consent import (
    ConsentAction,
    ConsentEvent,
    ImportJob,
    ImportStatus,
    Suppression,
    SuppressionKind,
    SuppressionOverride,
    SuppressionReason,
)
from .digests import (
    DigestDelivery,
    DigestDeliveryStatus,
    DigestFrequency,
    DigestGroup,
    DigestRun,
    DigestRunStatus,
)
from .endorsements import Endorsement, EndorsementStatus
from .lists import (
    DeliveryMode,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from .sends import Delivery, DeliveryStatus, Send, SendStatus, SendVersion, send_lists
from .users import Role, User

__all__ = [
    "BRANDING_ROW_ID",
    "Attachment",
    "Base",
    "Bounce",
    "BounceKind",
    "BounceSource",
    "BrandingLogo",
    "BrandingSettings",
    "Circular",
    "ConsentAction",
    "ConsentEvent",
    "CircularStatus",
    "CircularTranslation",
    "Counter",
    "Delivery",
    "DigestDelivery",
    "DigestDeliveryStatus",
    "DigestFrequency",
    "DigestGroup",
    "DigestRun",
    "DigestRunStatus",
    "DeliveryMode",
    "DeliveryStatus",
    "Endorsement",
    "EndorsementStatus",
    "ImportJob",
    "ImportStatus",
    "MailingList",
    "Role",
    "Send",
    "SendStatus",
    "SendVersion",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "SuppressionKind",
    "SuppressionOverride",
    "SuppressionReason",
    "User",
    "Version",
    "circular_lists",
    "send_lists",
    "utcnow",
]
