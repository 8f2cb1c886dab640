"""The signed links every email carries; the web layer serves these same paths."""

from __future__ import annotations

from .tokens import TokenSigner

UNSUBSCRIBE_PATH = "/u/"
PREFERENCES_PATH = "/preferences/"


class Links:
    def __init__(self, base_url: str, signer: TokenSigner) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer

    def unsubscribe(self, subscriber_id: int, list_id: int | None) -> str:
        token = self.signer.make("unsubscribe", subscriber_id, list_id)
        return f"{self.base_url}{UNSUBSCRIBE_PATH}{token}"

    def preferences(self, subscriber_id: int) -> str:
        token = self.signer.make("preferences", subscriber_id)
        return f"{self.base_url}{PREFERENCES_PATH}{token}"
