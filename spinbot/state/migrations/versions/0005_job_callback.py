"""jobs.callback, callback_event, callback_due_at: the job's webhook (spinbot.control.callbacks): its URL, secret and
delivery state; the event now being delivered; when its next attempt is due (NULL: nothing to deliver)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("callback_event", sa.String(40), nullable=True))
        batch.add_column(sa.Column("callback_due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_callback_due_at", "jobs", ["callback_due_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_callback_due_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callback_due_at")
        batch.drop_column("callback_event")
        batch.drop_column("callback")
