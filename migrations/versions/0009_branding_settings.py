"""branding settings: the organisation's name, logo, contact block, address, social links, about text, featured campaign and colours, edited in the admin

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:30:00
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
