"""Extensions, created unbound here and bound to an app in create_app()."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf import CSRFProtect

from .database import Database

db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()
migrate = Migrate()
# Keyed by the client address (behind proxies: after ProxyFix, see TRUSTED_PROXIES); the
# storage comes from RATELIMIT_STORAGE_URL so every web process shares the counters.
limiter = Limiter(key_func=get_remote_address)
