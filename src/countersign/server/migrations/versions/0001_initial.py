"""The initial schema: tuf_files, changefeed, server_keys.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "tuf_files", _id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gun", sa.String(255), nullable=False),
        sa.Column("role", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("gun", "role", "version", name="uq_tuf_files_gun_role_version"),
    )
    op.create_index("ix_tuf_files_sha256", "tuf_files", ["sha256"])
    op.create_index("ix_tuf_files_gun_role", "tuf_files", ["gun", "role"])
    op.create_table(
        "changefeed", _id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gun", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
    )
    op.create_index("ix_changefeed_gun", "changefeed", ["gun"])
    op.create_table(
        "server_keys", _id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False, unique=True),
        sa.Column("gun", sa.String(255), nullable=False),
        sa.Column("role", sa.String(255), nullable=False),
        sa.Column("algorithm", sa.String(20), nullable=False),
        sa.Column("public", sa.LargeBinary, nullable=False),
        sa.Column("private", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_server_keys_gun_role", "server_keys", ["gun", "role"])


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_table("changefeed")
    op.drop_table("tuf_files")
