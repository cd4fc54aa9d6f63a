"""clips: the library catalog

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clips",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(1024), nullable=True),
        sa.Column("youtube_id", sa.String(32), nullable=True),
        sa.Column("start_s", sa.Float, nullable=True),
        sa.Column("end_s", sa.Float, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("space", sa.String(64), nullable=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("n_frames", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_clips_youtube_id", "clips", ["youtube_id"])
    op.create_index("ix_clips_content_hash", "clips", ["content_hash"])


def downgrade() -> None:
    op.drop_table("clips")
