"""failure kinds and retried failures

Adds ``failure_kind`` (one of ``aloop.oracle.FAILURE_KINDS``, nullable: failures stored before
this revision have none) to ``label`` and ``oracle_job``, and lets a label be ``superseded``:
a failure whose candidate ``aloop retry`` sent to the oracle again, kept as history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-14
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_kind', sa.String(length=32), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_label_status'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_label_ok_has_value'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_label_status'), "status IN ('ok', 'failed', 'superseded')")
        batch_op.create_check_constraint(batch_op.f('ck_label_ok_has_value'), "status <> 'ok' OR value IS NOT NULL")

    with op.batch_alter_table('oracle_job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_kind', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oracle_job', schema=None) as batch_op:
        batch_op.drop_column('failure_kind')

    op.execute("UPDATE label SET status = 'failed' WHERE status = 'superseded'")
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_label_ok_has_value'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_label_status'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_label_status'), "status IN ('ok', 'failed')")
        batch_op.create_check_constraint(batch_op.f('ck_label_ok_has_value'), "status = 'failed' OR value IS NOT NULL")
        batch_op.drop_column('failure_kind')
