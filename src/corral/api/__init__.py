"""The daemon's HTTP API (FastAPI). Import cost is paid only by ``corral serve``."""
