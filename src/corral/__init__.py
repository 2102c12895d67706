"""corral: run, supervise and route llama.cpp ``llama-server`` instances.

The public Python surface is small; everything the CLI does is reachable from here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
