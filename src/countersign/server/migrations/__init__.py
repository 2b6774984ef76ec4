"""Schema migrations (alembic), run on start-up so every instance sees the same schema."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

_HERE = Path(__file__).parent
# alembic's ``context`` is one global per process: two upgrades in threads would clash.
# Across processes, env.py serialises them with a database lock.
_UPGRADE_LOCK = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision``; safe to run on each start."""
    with _UPGRADE_LOCK:
        command.upgrade(alembic_config(engine), revision)
