"""``presets.compose_sync`` (``corral fit``'s path, no event loop) composes exactly as
``presets.compose``: the compose tests of test_presets.py, run again through it."""

from __future__ import annotations

import asyncio

import pytest

from corral import presets
from tests.unit import test_presets as base
from tests.unit.test_presets import (  # noqa: F401 - collected here again, through compose_sync
    catalog,
    store,
    test_compose_errors,
    test_defaults_apply_without_a_preset,
    test_instance_named_after_the_preset_unless_taken,
    test_merge_order_defaults_preset_explicit,
    test_no_defaults_no_preset_passes_flags_through,
    test_the_build_comes_from_the_highest_layer,
)


class SyncView:
    """The fake supervisor of test_presets.py with a plain ``catalog`` function."""

    def __init__(self, sup: base.FakeSupervisor) -> None:
        self.sup, self.store = sup, sup.store

    def catalog(self, binary=None, build_id=None):
        return asyncio.run(self.sup.catalog(binary, build_id))

    def list(self):
        return self.sup.list()


@pytest.fixture(autouse=True)
def through_compose_sync(monkeypatch):
    calls = []

    def compose(sup, **kw):
        calls.append(kw)
        view = SyncView(sup)
        taken = [r.name for r in view.list()]
        return presets.compose_sync(view.store, view.catalog, taken=taken, **kw)

    monkeypatch.setattr(base, "compose", compose)
    yield
    assert calls, "the test did not go through compose_sync"
