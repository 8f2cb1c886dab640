"""partner digests: per-list weekly/monthly schedule, digest runs per period and the digests sent to each subscriber

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:30:00

A run is unique per (list, frequency, period_end): beat firing twice for the
same period finds the row and does nothing more. `subscriptions.digest_since`
is when a subscriber started taking the list as a digest; rows already in
digest mode before this revision count from their confirmation.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

JsonData = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    with op.batch_alter_table('lists', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest_weekday', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('digest_weekly_hour', sa.Integer(), server_default='9', nullable=False))
        batch_op.add_column(sa.Column('digest_monthday', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('digest_monthly_hour', sa.Integer(), server_default='9', nullable=False))

    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest_since', sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        'digest_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('list_id', sa.Integer(), nullable=False),
        sa.Column('frequency', sa.String(length=16), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('total', sa.Integer(), nullable=True),
        sa.Column('groups_count', sa.Integer(), nullable=True),
        sa.Column('sent_count', sa.Integer(), nullable=True),
        sa.Column('failed_count', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['list_id'], ['lists.id'], name=op.f('fk_digest_runs_list_id_lists'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_runs')),
        sa.UniqueConstraint('list_id', 'frequency', 'period_end', name=op.f('uq_digest_runs_list_id')),
    )
    with op.batch_alter_table('digest_runs', schema=None) as batch_op:
        batch_op.create_index('ix_digest_runs_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_digest_runs_list_id'), ['list_id'], unique=False)

    op.create_table(
        'digest_groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('circular_ids', JsonData, nullable=False),
        sa.Column('subject', sa.Text(), nullable=False),
        sa.Column('html_template', sa.Text(), nullable=False),
        sa.Column('text_template', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['digest_runs.id'], name=op.f('fk_digest_groups_run_id_digest_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_groups')),
    )
    with op.batch_alter_table('digest_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_digest_groups_run_id'), ['run_id'], unique=False)

    op.create_table(
        'digest_deliveries',
        sa.Column('id', BigId, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=True),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('circular_ids', JsonData, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['group_id'], ['digest_groups.id'], name=op.f('fk_digest_deliveries_group_id_digest_groups'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['digest_runs.id'], name=op.f('fk_digest_deliveries_run_id_digest_runs'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_digest_deliveries_subscriber_id_subscribers'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_deliveries')),
        sa.UniqueConstraint('run_id', 'subscriber_id', name=op.f('uq_digest_deliveries_run_id')),
    )
    with op.batch_alter_table('digest_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_digest_deliveries_run_status', ['run_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_digest_deliveries_group_id'), ['group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_digest_deliveries_subscriber_id'), ['subscriber_id'], unique=False)


def downgrade():
    with op.batch_alter_table('digest_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_digest_deliveries_subscriber_id'))
        batch_op.drop_index(batch_op.f('ix_digest_deliveries_group_id'))
        batch_op.drop_index('ix_digest_deliveries_run_status')
    op.drop_table('digest_deliveries')
    with op.batch_alter_table('digest_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_digest_groups_run_id'))
    op.drop_table('digest_groups')
    with op.batch_alter_table('digest_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_digest_runs_list_id'))
        batch_op.drop_index('ix_digest_runs_status')
    op.drop_table('digest_runs')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('digest_since')
    with op.batch_alter_table('lists', schema=None) as batch_op:
        batch_op.drop_column('digest_monthly_hour')
        batch_op.drop_column('digest_monthday')
        batch_op.drop_column('digest_weekly_hour')
        batch_op.drop_column('digest_weekday')
