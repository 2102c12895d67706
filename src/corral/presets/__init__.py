"""Presets: named sets of llama-server flags (plus model, build, env, policies) to launch from.

A preset is stored as one row of the ``presets`` table (JSON spec). The row named ``*``
holds the defaults every launch starts from. :func:`compose` turns a launch request into
a :class:`~corral.launchspec.LaunchSpec`: ``*`` defaults < the named preset < the
explicit arguments. Flags merge through the flag catalog of the binary that will run
(later wins, repeatable flags accumulate, ``--no-X`` cancels ``--X``); env vars are a
dict union in the same order.

Where each part lives:

- :mod:`~corral.presets.model`: the :class:`Preset` type and its validation;
- :mod:`~corral.presets.saved`: the presets in the store (its SQL is
  :mod:`corral.store.presets`'s);
- :mod:`~corral.presets.compose`: the layers of a launch;
- :mod:`~corral.presets.yaml`: corral's own file format (everything round-trips);
- :mod:`~corral.presets.ini`: llama.cpp's ``llama-server --models-preset`` format.

Nothing here imports :mod:`corral.supervisor`: compose needs a store, a catalog and the
names taken, and ``corral fit`` composes with no daemon.

Decisions where the issue is silent:

- Flags are stored as the tokens given (``-c 8192`` stays ``-c 8192``), checked against
  the catalog when one is at hand; they are normalised only when merged for a launch.
- A launch from a preset with no explicit instance name is named after the preset
  (``-2``, ``-3``... when taken).
"""

from __future__ import annotations

from corral.presets.compose import LaunchRequest, compose, compose_sync
from corral.presets.ini import from_ini, to_ini
from corral.presets.model import (
    ALIAS_RE,
    DEFAULTS,
    MAX_ALIASES,
    MAX_DESCRIPTION,
    MAX_ENV,
    MAX_FLAGS,
    MAX_MODEL,
    MAX_TOKEN,
    Preset,
    keep_secrets,
    preset_view,
    validate,
)
from corral.presets.saved import delete, find, get, list_all, save, save_many
from corral.presets.yaml import from_yaml, to_yaml

__all__ = [
    "ALIAS_RE",
    "DEFAULTS",
    "MAX_ALIASES",
    "MAX_DESCRIPTION",
    "MAX_ENV",
    "MAX_FLAGS",
    "MAX_MODEL",
    "MAX_TOKEN",
    "LaunchRequest",
    "Preset",
    "compose",
    "compose_sync",
    "delete",
    "find",
    "from_ini",
    "from_yaml",
    "get",
    "keep_secrets",
    "list_all",
    "preset_view",
    "save",
    "save_many",
    "to_ini",
    "to_yaml",
    "validate",
]
