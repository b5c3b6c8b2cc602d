"""End-to-End Desktops engine: job specs in, detached solver runs on cluster nodes out."""

__version__ = "0.1.0"
