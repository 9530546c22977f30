"""xopt: export, optimize, run and profile PyTorch models for edge GPUs."""
from __future__ import annotations

__version__ = "0.1.0"

from xopt.errors import InternalError, UserError  # noqa: E402

__all__ = ["__version__", "UserError", "InternalError"]
