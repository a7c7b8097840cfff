"""Alembic migrations, installed as the wopihost.migrations package (see pyproject.toml)."""
