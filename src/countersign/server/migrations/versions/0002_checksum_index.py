"""Look files up by checksum through one index on (gun, role, sha256).

Without it, a lookup by checksum scanned every stored version of the role
(both SQLite and PostgreSQL chose the (gun, role) index), so updates slowed
down as a repository's history grew.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tuf_files_gun_role_sha256", "tuf_files", ["gun", "role", "sha256"])
    op.drop_index("ix_tuf_files_gun_role", "tuf_files")


def downgrade() -> None:
    op.create_index("ix_tuf_files_gun_role", "tuf_files", ["gun", "role"])
    op.drop_index("ix_tuf_files_gun_role_sha256", "tuf_files")
