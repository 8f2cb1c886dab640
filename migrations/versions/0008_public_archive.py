"""public archive: a circular's topic and whether it shows in the public archive

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 14:25:00

The slug is not stored: it is computed from the title, which a sent circular
can no longer change, and the number alone identifies the page.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topic', sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column('in_archive', sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.create_index('ix_circulars_topic', ['topic'], unique=False)


def downgrade():
    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.drop_index('ix_circulars_topic')
        batch_op.drop_column('in_archive')
        batch_op.drop_column('topic')
