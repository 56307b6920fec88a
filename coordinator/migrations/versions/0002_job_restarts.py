"""Jobs remember how often a coordinator restart re-ran them, and the study they run in.

A restart re-runs an aggregate job from its beginning under the same job id, at most
``coordinator.driver.MAX_RESTARTS`` times (``restarts``; null: none yet); the study's
key version and accepted members when the job first ran (``run_study``) tell a re-run
that the study changed meanwhile, which fails it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("restarts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("run_study", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_study")
        batch.drop_column("restarts")
