"""send control: schedule, pause and cancel a send; relay errors in a row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 12:55:00

Delivery and send statuses are plain strings, so the new values (scheduled,
paused, cancelled; deliveries: cancelled) need no change here.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sends', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancelled_count', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pause_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('paused_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('cancelled_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column('relay_errors', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_sends_paused_by_id_users'), 'users', ['paused_by_id'], ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_sends_cancelled_by_id_users'), 'users', ['cancelled_by_id'], ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_index('ix_sends_status_scheduled_at', ['status', 'scheduled_at'], unique=False)


def downgrade():
    with op.batch_alter_table('sends', schema=None) as batch_op:
        batch_op.drop_index('ix_sends_status_scheduled_at')
        batch_op.drop_constraint(batch_op.f('fk_sends_cancelled_by_id_users'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_sends_paused_by_id_users'), type_='foreignkey')
        batch_op.drop_column('relay_errors')
        batch_op.drop_column('cancelled_by_id')
        batch_op.drop_column('cancelled_at')
        batch_op.drop_column('paused_by_id')
        batch_op.drop_column('pause_reason')
        batch_op.drop_column('paused_at')
        batch_op.drop_column('scheduled_at')
        batch_op.drop_column('cancelled_count')
