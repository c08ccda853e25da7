"""jobs.idempotency_key, idempotency_digest: the client's Idempotency-Key of the POST /v1/jobs that created the job
and the SHA-256 of that request; unique per API key (owner): one index on (owner, idempotency_key), and one on
idempotency_key where owner IS NULL (the keyless API's jobs; NULL owners never collide in the first)

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OWNER_KEY_INDEX = "uq_jobs_owner_idempotency_key"
KEYLESS_KEY_INDEX = "uq_jobs_keyless_idempotency_key"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("idempotency_digest", sa.String(64), nullable=True))
    op.create_index(OWNER_KEY_INDEX, "jobs", ["owner", "idempotency_key"], unique=True)
    keyless = sa.text("owner IS NULL")
    op.create_index(
        KEYLESS_KEY_INDEX, "jobs", ["idempotency_key"], unique=True, sqlite_where=keyless, postgresql_where=keyless
    )


def downgrade() -> None:
    op.drop_index(KEYLESS_KEY_INDEX, table_name="jobs")
    op.drop_index(OWNER_KEY_INDEX, table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("idempotency_digest")
        batch.drop_column("idempotency_key")
