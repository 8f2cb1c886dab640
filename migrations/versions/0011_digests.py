"""partner digests: per-list weekly/monthly schedule, digest runs per period and the digests sent to each subscriber

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:30:00
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
