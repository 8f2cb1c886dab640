"""endorsements: when the contact details on file were submitted

A confirmation link carries its submission's details. Used late, an older
link put older details back over those of a later submission, confirmed or
not. With the time of the details on file, a link older than them changes
nothing (and, before any confirmation, one for an address a later submission
replaced confirms nothing). Rows from before keep NULL: any link may apply.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 07:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('endorsements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('details_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('endorsements', schema=None) as batch_op:
        batch_op.drop_column('details_at')
