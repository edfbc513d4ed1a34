"""prediction evidence

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:40:00

A prediction keeps the model's probability for every operation of its taxonomy, as the dominant
and as the next operation (what a whole-video timeline weighs against the procedure's prior).
Predictions from before have none: their timelines use the answer's confidence alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operation_probabilities", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("next_probabilities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("next_probabilities")
        batch_op.drop_column("operation_probabilities")
