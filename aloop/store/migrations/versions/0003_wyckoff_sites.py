"""Wyckoff sites of candidates and materials

Adds ``wyckoff`` (``Crystal.wyckoff``, e.g. ``'Li:4a Mn:4b O:8c O:8c'``; nullable: rows stored
before this revision, and crystals without an assignment, have none) to ``candidate`` and
``material``.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('candidate', 'material'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('wyckoff', sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ('material', 'candidate'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('wyckoff')
