"""``corral update`` as a daemon job (being written)."""

from __future__ import annotations

from corral.events import Broadcaster
from corral.settings import Settings
from corral.store.db import Store


class BuildJobs:
    """Runs build installs in the daemon and publishes their progress on ``events``."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.events = Broadcaster()

    async def close(self) -> None:
        """Stop publishing (running builds are cancelled)."""
