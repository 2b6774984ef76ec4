"""The trust server's tables. notary-server's ``tuf_files`` and ``changefeed``, plus
``server_keys`` for the built-in signer (private keys encrypted at rest)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

tuf_files = Table(
    "tuf_files",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("gun", String(255), nullable=False),
    Column("role", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    UniqueConstraint("gun", "role", "version", name="uq_tuf_files_gun_role_version"),
    Index("ix_tuf_files_sha256", "sha256"),
    Index("ix_tuf_files_gun_role_sha256", "gun", "role", "sha256"),
)

changefeed = Table(
    "changefeed",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("gun", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("category", String(20), nullable=False),
    Index("ix_changefeed_gun", "gun"),
)

server_keys = Table(
    "server_keys",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("gun", String(255), nullable=False),
    Column("role", String(255), nullable=False),
    Column("algorithm", String(20), nullable=False),
    Column("public", LargeBinary, nullable=False),
    Column("private", LargeBinary, nullable=False),
    Index("ix_server_keys_gun_role", "gun", "role"),
)
