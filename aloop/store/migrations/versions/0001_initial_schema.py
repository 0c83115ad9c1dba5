"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign')),
    sa.UniqueConstraint('name', name=op.f('uq_campaign_name'))
    )
    op.create_table('round_lock',
    sa.Column('campaign', sa.String(length=200), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('acquired_at', sa.DateTime(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('campaign', name=op.f('pk_round_lock'))
    )
    op.create_table('material',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('formula', sa.String(length=200), nullable=False),
    sa.Column('space_group', sa.Integer(), nullable=True),
    sa.Column('a', sa.Float(), nullable=True),
    sa.Column('b', sa.Float(), nullable=True),
    sa.Column('c', sa.Float(), nullable=True),
    sa.Column('alpha', sa.Float(), nullable=True),
    sa.Column('beta', sa.Float(), nullable=True),
    sa.Column('gamma', sa.Float(), nullable=True),
    sa.Column('cif', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_material_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_material')),
    sa.UniqueConstraint('campaign_id', 'key', name=op.f('uq_material_campaign_id_key'))
    )
    with op.batch_alter_table('material', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_material_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('round',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_round_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round')),
    sa.UniqueConstraint('campaign_id', 'number', name=op.f('uq_round_campaign_id_number'))
    )
    with op.batch_alter_table('round', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_round_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('candidate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('space_group', sa.Integer(), nullable=False),
    sa.Column('formula', sa.String(length=200), nullable=False),
    sa.Column('a', sa.Float(), nullable=False),
    sa.Column('b', sa.Float(), nullable=False),
    sa.Column('c', sa.Float(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('beta', sa.Float(), nullable=False),
    sa.Column('gamma', sa.Float(), nullable=False),
    sa.Column('canonical_hash', sa.String(length=64), nullable=False),
    sa.Column('cif', sa.Text(), nullable=True),
    sa.Column('proxy_mean', sa.Float(), nullable=True),
    sa.Column('proxy_std', sa.Float(), nullable=True),
    sa.Column('acquisition', sa.Float(), nullable=True),
    sa.Column('review', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("review IN ('pending', 'approved', 'rejected')", name=op.f('ck_candidate_review')),
    sa.CheckConstraint("state IN ('proposed', 'approved', 'rejected', 'submitted', 'labelled', 'failed')", name=op.f('ck_candidate_state')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_candidate_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['round.id'], name=op.f('fk_candidate_round_id_round'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_candidate')),
    sa.UniqueConstraint('campaign_id', 'canonical_hash', name=op.f('uq_candidate_campaign_id_canonical_hash'))
    )
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_candidate_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_candidate_round_id'), ['round_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_candidate_state'), ['state'], unique=False)

    op.create_table('label',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=True),
    sa.Column('material_id', sa.Integer(), nullable=True),
    sa.Column('oracle', sa.String(length=100), nullable=False),
    sa.Column('fidelity', sa.Float(), nullable=False),
    sa.Column('property', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('uncertainty', sa.Float(), nullable=True),
    sa.Column('structure', sa.Text(), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('job_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("status = 'failed' OR value IS NOT NULL", name=op.f('ck_label_ok_has_value')),
    sa.CheckConstraint("status IN ('ok', 'failed')", name=op.f('ck_label_status')),
    sa.CheckConstraint('(candidate_id IS NULL) <> (material_id IS NULL)', name=op.f('ck_label_one_subject')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_label_candidate_id_candidate'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['material_id'], ['material.id'], name=op.f('fk_label_material_id_material'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label')),
    sa.UniqueConstraint('candidate_id', 'oracle', 'property', name=op.f('uq_label_candidate_id_oracle_property')),
    sa.UniqueConstraint('material_id', 'oracle', 'property', name=op.f('uq_label_material_id_oracle_property'))
    )
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_candidate_id'), ['candidate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_material_id'), ['material_id'], unique=False)

    op.create_table('oracle_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('oracle', sa.String(length=100), nullable=False),
    sa.Column('job_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('submitted_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'done', 'failed', 'lost')", name=op.f('ck_oracle_job_status')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_oracle_job_candidate_id_candidate'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oracle_job')),
    sa.UniqueConstraint('oracle', 'job_id', name=op.f('uq_oracle_job_oracle_job_id'))
    )
    with op.batch_alter_table('oracle_job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oracle_job_candidate_id'), ['candidate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oracle_job_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('oracle_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oracle_job_status'))
        batch_op.drop_index(batch_op.f('ix_oracle_job_candidate_id'))

    op.drop_table('oracle_job')
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_material_id'))
        batch_op.drop_index(batch_op.f('ix_label_candidate_id'))

    op.drop_table('label')
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_candidate_state'))
        batch_op.drop_index(batch_op.f('ix_candidate_round_id'))
        batch_op.drop_index(batch_op.f('ix_candidate_campaign_id'))

    op.drop_table('candidate')
    with op.batch_alter_table('round', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_round_campaign_id'))

    op.drop_table('round')
    with op.batch_alter_table('material', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_material_campaign_id'))

    op.drop_table('material')
    op.drop_table('round_lock')
    op.drop_table('campaign')
