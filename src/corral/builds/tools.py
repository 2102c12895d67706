"""The llama.cpp tools a build carries beside its ``llama-server``.

A build corral makes or installs keeps the tools in one directory: ``rpc-server``
(llama.cpp's RPC backend, for one model across hosts: ``llama-server --rpc``) and
``llama-fit-params`` (llama.cpp's own memory fit). Their names changed over llama.cpp's
history (the RPC server's target is ``ggml-rpc-server`` in newer trees, ``rpc-server``
in older trees and release archives), so each tool is known by its aliases; the first
one present wins.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Tool -> the file names it has had, newest first.
TOOLS: dict[str, tuple[str, ...]] = {
    "rpc-server": ("ggml-rpc-server", "rpc-server"),
    "llama-fit-params": ("llama-fit-params",),
}


def tools_beside(binary: str | os.PathLike[str]) -> dict[str, str]:
    """Tool name -> path, for each tool found executable beside ``binary``."""
    folder = Path(binary).parent
    found = {}
    for tool, names in TOOLS.items():
        for name in names:
            path = folder / name
            if path.is_file() and os.access(path, os.X_OK):
                found[tool] = str(path)
                break
    return found


def build_view(record) -> dict:
    """A registered build as the API and ``builds ls --json`` show it: its record and
    the tools beside its binary."""
    return {**record.to_dict(), "tools": sorted(tools_beside(record.path))}
