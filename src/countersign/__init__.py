"""countersign: security assurance of container images through TUF content trust."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
