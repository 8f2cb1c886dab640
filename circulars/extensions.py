"""Extensions, created unbound here and bound to an app in create_app()."""

from __future__ import annotations

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf import CSRFProtect

from .database import Database

db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()
migrate = Migrate()
