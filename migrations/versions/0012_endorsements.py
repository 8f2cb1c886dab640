"""sign-on statements: circulars opened for endorsement, and the organisations that endorse them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:30:00

A circular is open for endorsement while endorsement_open is set and
endorsement_closes_at (if any) is still to come. Each organisation endorses a
circular once: (circular, normalised name, country) is unique, and a second
submission is merged into the first (see circulars/endorsements/service.py).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('endorsement_open', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column('endorsement_opened_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column('endorsement_closes_at', sa.DateTime(timezone=True), nullable=True)
        )

    op.create_table(
        'endorsements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('circular_id', sa.Integer(), nullable=False),
        sa.Column('organisation', sa.String(length=200), nullable=False),
        sa.Column('org_key', sa.String(length=200), nullable=False),
        sa.Column('country', sa.String(length=2), nullable=False),
        sa.Column('contact_name', sa.String(length=200), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decided_by_id', sa.Integer(), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('submissions', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ip', sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(
            ['circular_id'],
            ['circulars.id'],
            name=op.f('fk_endorsements_circular_id_circulars'),
            ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['decided_by_id'],
            ['users.id'],
            name=op.f('fk_endorsements_decided_by_id_users'),
            ondelete='SET NULL',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_endorsements')),
        sa.UniqueConstraint('circular_id', 'org_key', 'country', name='uq_endorsements_org'),
    )
    with op.batch_alter_table('endorsements', schema=None) as batch_op:
        batch_op.create_index(
            'ix_endorsements_circular_status', ['circular_id', 'status'], unique=False
        )


def downgrade():
    with op.batch_alter_table('endorsements', schema=None) as batch_op:
        batch_op.drop_index('ix_endorsements_circular_status')
    op.drop_table('endorsements')

    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.drop_column('endorsement_closes_at')
        batch_op.drop_column('endorsement_opened_at')
        batch_op.drop_column('endorsement_open')
