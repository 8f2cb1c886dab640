"""circular translations: per-language subject and body sharing the number, a circular's default language, attachments per language

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 03:30:00

A circular's own title and body are its default-language version
(circulars.default_language); circular_translations holds the others, one row
per language. An attachment with a language goes only with that version; NULL
means shared by all. Each send stores one rendering per version
(send_versions, beside the default one on sends), and each delivery records the
version its recipient was given.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('default_language', sa.String(length=16), server_default='en', nullable=False)
        )
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=16), nullable=True))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=16), nullable=True))
    op.create_table(
        'circular_translations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('circular_id', sa.Integer(), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('title', sa.String(length=300), nullable=False),
        sa.Column('body_markdown', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['circular_id'],
            ['circulars.id'],
            name=op.f('fk_circular_translations_circular_id_circulars'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_circular_translations')),
        sa.UniqueConstraint(
            'circular_id', 'language', name=op.f('uq_circular_translations_circular_id')
        ),
    )
    op.create_table(
        'send_versions',
        sa.Column('send_id', sa.Integer(), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.Text(), nullable=False),
        sa.Column('html_template', sa.Text(), nullable=False),
        sa.Column('text_template', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ['send_id'],
            ['sends.id'],
            name=op.f('fk_send_versions_send_id_sends'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('send_id', 'language', name=op.f('pk_send_versions')),
    )


def downgrade():
    op.drop_table('send_versions')
    op.drop_table('circular_translations')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('circulars', schema=None) as batch_op:
        batch_op.drop_column('default_language')
