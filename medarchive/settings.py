"""medarchive settings: one module, driven by environment variables (12-factor).

Defaults are the embedded mode (SQLite under var/, local file storage, a broker that needs
no server). Every variable is listed in README.md.
"""

import os
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("MEDARCHIVE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

# "embedded" (default) or "production": production turns on every HTTPS protection.
PROFILE = env.str("MEDARCHIVE_PROFILE", default="embedded")
if PROFILE not in {"embedded", "production"}:
    raise environ.ImproperlyConfigured("MEDARCHIVE_PROFILE must be 'embedded' or 'production'")

DEBUG = env.bool("MEDARCHIVE_DEBUG", default=False)
if DEBUG or env.bool("MEDARCHIVE_TESTING", default=False):
    SECRET_KEY = env.str("SECRET_KEY", default="insecure-development-key-not-for-production-use-0123456789")
else:
    SECRET_KEY = env.str("SECRET_KEY")  # required outside debug and tests
    if len(SECRET_KEY) < 32:
        raise environ.ImproperlyConfigured("SECRET_KEY is empty or too short: give at least 32 random characters.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "corsheaders",
    "django_celery_beat",
    "axes",
    "medarchive",
    "subscribers",
    "images",
    "backup",
    "billing",
    "hardcopy",
    "software",
]

MIDDLEWARE = [
    # gzip for JSON and text answers only (not DICOM or image bytes); see medarchive/middleware.py.
    "medarchive.middleware.JsonGZipMiddleware",
    # Before anything that can answer on its own (PrincipalMiddleware's 401, CommonMiddleware), so those answers carry
    # the CORS headers a viewer on another origin needs to read them.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "subscribers.middleware.PrincipalMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks, so it sees the outcome of every authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "medarchive.urls"
WSGI_APPLICATION = "medarchive.wsgi.application"
ASGI_APPLICATION = "medarchive.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "subscribers.context_processors.principal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'medarchive.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the DICOM listener and the worker read while one writes;
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE", "timeout": 30}
    )
    # Tests that start a real worker process need the test database in a file it can open.
    # One file per test process, so parallel runs (and pytest-xdist workers) never share one.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-medarchive-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "subscribers.User"

# --- Authentication -----------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)

AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# API tokens: lifetime when none is given, and how often last-used time is written.
API_TOKEN_DEFAULT_DAYS = env.int("API_TOKEN_DEFAULT_DAYS", default=90)
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=730)
API_TOKEN_LAST_USED_RESOLUTION = timedelta(seconds=60)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "subscribers.drf.TokenAuthentication",
        "subscribers.drf.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["subscribers.drf.IsMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "subscribers.drf.exception_handler",
}

# CORS, for a web viewer (e.g. OHIF) served from another origin that reads DICOMweb and the API with a bearer token.
# Only the listed origins, only those paths; no cookies cross origins (CORS_ALLOW_CREDENTIALS stays False), so the
# portal session never works from another origin. The default allowed request headers include Authorization.
CORS_ALLOWED_ORIGINS = [origin.strip() for origin in env.list("CORS_ALLOWED_ORIGINS", default=[]) if origin.strip()]
CORS_URLS_REGEX = r"^/(dicomweb|api)/.*$"
CORS_ALLOW_CREDENTIALS = False
# QIDO-RS says "more results exist" in a Warning header (PS3.18 8.3.4.4): the viewer must be able to read it.
CORS_EXPOSE_HEADERS = ["Warning", "Content-Type", "Content-Length"]

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files and storage ----------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("ARCHIVE_ROOT", default=str(VAR_DIR / "archive")))
BACKUP_ROOT = Path(env.str("BACKUP_ROOT", default=str(VAR_DIR / "backup")))
# The OHIF viewer installed by bin/install_viewer, served under /viewer/ by images/viewer_views.py.
VIEWER_ROOT = Path(env.str("VIEWER_DIR", default=str(VAR_DIR / "viewer")))


def _storage(prefix: str, root: Path) -> dict:
    """A storage alias: local folder by default, S3-compatible when {prefix}_S3_BUCKET is set."""
    bucket = env.str(f"{prefix}_S3_BUCKET", default="")
    if not bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": env.str("S3_ENDPOINT_URL", default=None),
            "region_name": env.str("S3_REGION", default=None),
            "access_key": env.str("S3_ACCESS_KEY_ID", default=None),
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default=None),
            "default_acl": None,
            "file_overwrite": True,
            "querystring_auth": False,
        },
    }


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(VAR_DIR / "media")}},
    "archive": _storage("ARCHIVE", MEDIA_ROOT),
    "backup": _storage("BACKUP", BACKUP_ROOT),
    # Artifacts of downloadable medical software (software app); SOFTWARE_S3_BUCKET puts them in an object store.
    "software": _storage("SOFTWARE", Path(env.str("SOFTWARE_ROOT", default=str(VAR_DIR / "software")))),
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not env.bool("MEDARCHIVE_TESTING", default=False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Cache ----------------------------------------------------------------------------------
# Rendered thumbnails, keyed by the SHA-256 of the stored bytes. Embedded: files under var/cache, shared by every
# process on the machine. Scaled out: one cache all web nodes share, e.g. CACHE_URL=redis://host:6379/1.
CACHES = {"default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}
if CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
    # Django culls a file cache at 300 entries; a thumbnail is a few kB, so 20,000 of them stay under 100 MB.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 20_000)

# --- Background work ----------------------------------------------------------------------
# With REDIS_URL, Redis is the broker; without it, kombu's filesystem transport under var/
# lets a worker run beside the web server with no broker service at all.
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker")))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="medarchive")
CELERY_TASK_IGNORE_RESULT = True  # tasks record progress and outcome on model rows
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the task to be run again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {"task": "medarchive.tasks.record_heartbeat", "schedule": 60.0},
    # Storage conditions (images/storage_conditions): deletions past retention, compression at rest, the state of each institution.
    "storage-conditions": {"task": "images.storage_conditions.enforce_all", "schedule": crontab(minute=30, hour=2)},
    # Last month's invoices, early on the 1st (idempotent: a second run finds them issued).
    "billing-monthly-invoices": {"task": "billing.tasks.issue_last_month_invoices", "schedule": crontab(minute=0, hour=3, day_of_month=1)},
    # Polling sources (software/polling): start a poll of each source whose next_poll_at has come.
    "software-poll-sources": {"task": "software.polling.dispatch_due_polls", "schedule": 60.0},
    # Backups (backup/engine/schedule.py): start due runs every minute (a contract's schedule_time, changed patients,
    # quiet studies); verify each contract's verified sets once a day (tried hourly while the contract is busy).
    "backup-dispatch": {"task": "backup.tasks.dispatch_due_backups", "schedule": 60.0},
    "backup-verify-daily": {"task": "backup.tasks.start_due_verifications", "schedule": crontab(minute=15)},
}

# --- Email --------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="medarchive@localhost")
# The portal's address as users reach it, for links in e-mails.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")

# --- DICOM --------------------------------------------------------------------------------
DICOM_AET = env.str("DICOM_AET", default="MEDARCHIVE")
DICOM_PORT = env.int("DICOM_PORT", default=11112)
# Refuse associations whose called AE title is not DICOM_AET (A-ASSOCIATE-RJ reason 7); off for "ANY-SCP" senders.
DICOM_REQUIRE_CALLED_AET = env.bool("DICOM_REQUIRE_CALLED_AET", default=True)
# Largest object accepted by any way in (C-STORE, STOW-RS, upload); larger ones are refused, not truncated.
DICOM_MAX_INSTANCE_BYTES = env.int("DICOM_MAX_INSTANCE_BYTES", default=1024 * 1024 * 1024)
# Largest HTTP request body (STOW-RS, uploads); bodies stream to temporary files, never into memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR", default=None)
# Largest STOW-RS request body (all its parts); parts stream to temporary files in FILE_UPLOAD_TEMP_DIR, never into memory.
DICOMWEB_MAX_REQUEST_BYTES = env.int("DICOMWEB_MAX_REQUEST_BYTES", default=4 * 1024 * 1024 * 1024)
# Most bytes one zip (browser upload or import_dicom) may expand to; beyond it the zip is refused as a bomb.
UPLOAD_MAX_UNCOMPRESSED_BYTES = env.int("UPLOAD_MAX_UNCOMPRESSED_BYTES", default=20 * 1024**3)

# --- Processing jobs (software app) ----------------------------------------------------------
# Limits of one job on the worker: wall-clock seconds and memory in MB (beyond either, the job fails and leaves no product).
PROCESSING_TIME_LIMIT_SECONDS = env.int("PROCESSING_TIME_LIMIT_SECONDS", default=1800)
PROCESSING_MEMORY_LIMIT_MB = env.int("PROCESSING_MEMORY_LIMIT_MB", default=4096)

# --- Billing --------------------------------------------------------------------------------
# The provider's details printed on every invoice (kept on the invoice as issued).
BILLING_PROVIDER_NAME = env.str("BILLING_PROVIDER_NAME", default="medarchive service provider")
BILLING_PROVIDER_ADDRESS = env.str("BILLING_PROVIDER_ADDRESS", default="", multiline=True)
BILLING_PROVIDER_EMAIL = env.str("BILLING_PROVIDER_EMAIL", default=DEFAULT_FROM_EMAIL)
BILLING_PROVIDER_TAX_ID = env.str("BILLING_PROVIDER_TAX_ID", default="")
BILLING_PROVIDER_BANK = env.str("BILLING_PROVIDER_BANK", default="", multiline=True)
# Invoice numbers are PREFIX-YEAR-NNNNNN, gapless per prefix and year.
BILLING_INVOICE_PREFIX = env.str("BILLING_INVOICE_PREFIX", default="MA")
BILLING_CURRENCY = env.str("BILLING_CURRENCY", default="EUR")
try:
    # Percent of the subtotal (19 means 19 %); 0: no tax line.
    BILLING_TAX_RATE = Decimal(env.str("BILLING_TAX_RATE", default="0"))
except InvalidOperation:
    raise environ.ImproperlyConfigured("BILLING_TAX_RATE must be a decimal number of percent, e.g. 19 or 7.5") from None
BILLING_TAX_LABEL = env.str("BILLING_TAX_LABEL", default="VAT")
BILLING_PAYMENT_DAYS = env.int("BILLING_PAYMENT_DAYS", default=30)

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PROFILE == "production":
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "pynetdicom": {"level": env.str("PYNETDICOM_LOG_LEVEL", default="WARNING")},
        # WeasyPrint (invoice PDFs) logs every rendering step at INFO.
        "weasyprint": {"level": "WARNING"},
    },
}
