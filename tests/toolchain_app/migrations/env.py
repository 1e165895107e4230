"""The application's Alembic environment, as a team writes it: online and offline, models as target.

The connection comes from APP_DATABASE (a libpq connection string); the models module from
APP_MODELS (``module:attribute``), when set, for autogenerate and ``alembic check``.
"""
import importlib
import os

import psycopg
import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

target_metadata = None
if os.environ.get("APP_MODELS"):
    module, _, attr = os.environ["APP_MODELS"].partition(":")
    target_metadata = getattr(importlib.import_module(module), attr or "Base").metadata


def include_object(obj, name, type_, reflected, compare_to):
    # The models describe part of the schema: tables they do not declare are not theirs to drop.
    return not (type_ == "table" and reflected and compare_to is None)


def run_migrations_offline():
    context.configure(url="postgresql+psycopg://", target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    conninfo = os.environ["APP_DATABASE"]
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo),
                              poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
