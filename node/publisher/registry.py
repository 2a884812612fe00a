"""Which publishers this node offers, by the spec's ``Publisher.Type``."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Publisher, PublishError


class PublisherRegistry:
    def __init__(self, publishers: Iterable[Publisher] = ()) -> None:
        self._publishers: dict[str, Publisher] = {}
        for publisher in publishers:
            self._publishers[publisher.publisher_type] = publisher

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self._publishers)

    def get(self, publisher_type: str) -> Publisher:
        publisher = self._publishers.get(publisher_type)
        if publisher is None:
            raise PublishError(f"publisher {publisher_type!r} is not available on this node "
                               f"(available: {', '.join(self.types) or 'none'})")
        return publisher
