"""digest_runs: the From name, read with the branding the run was rendered with

As for a send (0015): a digest run renders its groups once, and took the
organisation's name for From whenever a worker prepared a group's message, so
a save on the branding page while a run was under way changed the sender's
name of the rest of that run only. Runs from before keep taking the current name.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 07:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('digest_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_name', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('digest_runs', schema=None) as batch_op:
        batch_op.drop_column('from_name')
