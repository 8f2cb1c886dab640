"""Page arithmetic for numbered pages, shared by the domain's queries and the web's lists."""

from __future__ import annotations


class PageNumbers:
    """What a page of `total` items, `per_page` at a time, needs to draw its links.

    A mixin for dataclasses that have `page`, `per_page` and `total`.
    """

    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages
