"""sends: the From name, read with the branding the send was rendered with

A send renders its body once at its start, with the branding of that moment,
but took the organisation's name for From whenever a batch prepared its
message: a save on the branding page in the middle of a send changed the
sender's name of later batches only. Now the name is kept with the rendering.
Sends started before this migration keep taking the current name.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 07:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sends', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_name', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('sends', schema=None) as batch_op:
        batch_op.drop_column('from_name')
