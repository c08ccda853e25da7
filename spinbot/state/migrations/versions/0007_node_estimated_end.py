"""node_runs.estimated_end_at: when a running node should end, from its measured progress rate, so that GET
/v1/jobs/{id} and `spinbot jobs watch` show the time left its events carry

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_runs") as batch:
        batch.add_column(sa.Column("estimated_end_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_runs") as batch:
        batch.drop_column("estimated_end_at")
