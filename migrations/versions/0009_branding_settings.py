"""branding settings: the organisation's name, logo, contact block, address, social links, about text, featured campaign and colours, edited in the admin

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:30:00

One settings row (id 1, enforced by a check); until it is saved the ORG_*
environment settings are the branding. Logos are kept by content hash in
their own table, every one ever saved, so mail sent earlier keeps its image.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('branding_logos',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_branding_logos'))
    )
    op.create_table('branding_settings',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('signoff', sa.String(length=200), nullable=False),
    sa.Column('postal_address', sa.Text(), nullable=False),
    sa.Column('phone', sa.String(length=50), nullable=False),
    sa.Column('fax', sa.String(length=50), nullable=False),
    sa.Column('mobile', sa.String(length=50), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('website', sa.String(length=500), nullable=False),
    sa.Column('social', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('about', sa.Text(), nullable=False),
    sa.Column('campaign_title', sa.String(length=200), nullable=False),
    sa.Column('campaign_text', sa.Text(), nullable=False),
    sa.Column('campaign_url', sa.String(length=500), nullable=False),
    sa.Column('primary_color', sa.String(length=7), nullable=False),
    sa.Column('accent_color', sa.String(length=7), nullable=False),
    sa.Column('logo_sha256', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.Column('updated_by_email', sa.String(length=320), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_branding_settings_single_row')),
    sa.ForeignKeyConstraint(['logo_sha256'], ['branding_logos.sha256'], name=op.f('fk_branding_settings_logo_sha256_branding_logos'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['updated_by_id'], ['users.id'], name=op.f('fk_branding_settings_updated_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_branding_settings'))
    )


def downgrade():
    op.drop_table('branding_settings')
    op.drop_table('branding_logos')
