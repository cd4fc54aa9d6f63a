"""clips: file bytes hash (cheap skip before embedding), the job that processes a clip, duplicates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.add_column(sa.Column("file_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("job_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("duplicate_of", sa.String(64), nullable=True))
        batch.create_index("ix_clips_file_sha256", ["file_sha256"])
        batch.create_index("ix_clips_status", ["status"])
        batch.create_index("ix_clips_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.drop_index("ix_clips_created_at")
        batch.drop_index("ix_clips_status")
        batch.drop_index("ix_clips_file_sha256")
        batch.drop_column("duplicate_of")
        batch.drop_column("job_id")
        batch.drop_column("file_sha256")
