"""work units and idempotent jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 22:38:26

Work units replace task_attempts: the database now holds all pending work (an outbox with
leases), and jobs gain an idempotency key and a listing flag. Jobs in flight during the upgrade
have no units; the sweeper re-creates the work their open items call for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "work_units",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("training_run_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatches", sa.Integer(), nullable=False),
        sa.Column("lease", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["job_items.id"],
            name=op.f("fk_work_units_item_id_job_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_work_units_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["training_run_id"],
            ["training_runs.id"],
            name=op.f("fk_work_units_training_run_id_training_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_units")),
    )
    with op.batch_alter_table("work_units", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_work_units_item_id"), ["item_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_work_units_job_id"), ["job_id"], unique=False)
        batch_op.create_index("ix_work_units_kind_state", ["kind", "state", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_work_units_training_run_id"), ["training_run_id"], unique=False
        )

    op.drop_table("task_attempts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("listed", sa.Boolean(), server_default=sa.text("(true)"), nullable=False)
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_jobs_idempotency_key"), ["idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_idempotency_key"), type_="unique")
        batch_op.drop_column("error")
        batch_op.drop_column("listed")
        batch_op.drop_column("request_digest")
        batch_op.drop_column("idempotency_key")

    op.create_table(
        "task_attempts",
        sa.Column("task_id", sa.VARCHAR(length=64), nullable=False),
        sa.Column("attempts", sa.INTEGER(), nullable=False),
        sa.Column("updated_at", sa.DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_attempts")),
    )
    with op.batch_alter_table("work_units", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_units_training_run_id"))
        batch_op.drop_index("ix_work_units_kind_state")
        batch_op.drop_index(batch_op.f("ix_work_units_job_id"))
        batch_op.drop_index(batch_op.f("ix_work_units_item_id"))

    op.drop_table("work_units")
