"""video identity, clip sampling, model version settings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 23:32:35

Videos record their subject, session and clip-id prefix; a prefix belongs to one key per bucket
(clip_prefixes). Clips are kept per frame settings (`sampling`; clips from before have "" and
are sampled again, once, by the next job that needs them). Model versions record what their
adapter was trained with.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clip_prefixes",
        sa.Column("bucket", sa.String(length=255), nullable=False),
        sa.Column("prefix", sa.String(length=1024), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "prefix", name=op.f("pk_clip_prefixes")),
    )
    with op.batch_alter_table("clips", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sampling", sa.String(length=128), server_default="", nullable=False)
        )
        batch_op.drop_constraint(batch_op.f("uq_clips_window"), type_="unique")
        batch_op.create_unique_constraint(
            "uq_clips_window", ["video_id", "sampling", "start_frame"]
        )
        batch_op.alter_column(
            "clip_key", existing_type=sa.String(length=512), type_=sa.String(length=1100)
        )

    with op.batch_alter_table("job_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sampling", sa.String(length=128), nullable=True))
    # Items sampled before: their clips are the ones recorded without a sampling.
    op.execute("UPDATE job_items SET sampling = '' WHERE video_id IS NOT NULL")

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settings", sa.JSON(), nullable=True))

    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("session", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("clip_prefix", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_items", schema=None) as batch_op:
        batch_op.drop_column("sampling")
    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.drop_column("clip_prefix")
        batch_op.drop_column("session")
        batch_op.drop_column("subject")

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("settings")

    with op.batch_alter_table("clips", schema=None) as batch_op:
        batch_op.alter_column(
            "clip_key", existing_type=sa.String(length=1100), type_=sa.String(length=512)
        )
        batch_op.drop_constraint("uq_clips_window", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_clips_window"), ["video_id", "start_frame"]
        )
        batch_op.drop_column("sampling")

    op.drop_table("clip_prefixes")
