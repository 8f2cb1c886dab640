"""circular translations: per-language subject and body sharing the number, a circular's default language, attachments per language

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 03:30:00
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
