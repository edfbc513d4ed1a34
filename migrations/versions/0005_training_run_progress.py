"""training run progress

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:40:00

A training run records what it is doing besides its step: the phase (gathering the dataset,
training, evaluating), the latest training loss, and how far the evaluation of each model is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("progress")
