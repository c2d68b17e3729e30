"""Alembic's environment for the payment gateway's ledger: SQLite at $DATA_DIR/payments.db.

sqlifier sets DATA_DIR (.sqlifier/<env>/data/payment-gateway, kept across releases) for
`migrate` and `schema_version`; run by hand without it, the database is ./payments.db.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def database_url() -> str:
    path = os.path.join(os.environ.get("DATA_DIR") or ".", "payments.db")
    return f"sqlite:///{os.path.abspath(path)}"


def run_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    context.configure(url=database_url(), literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # SQLite alters a table by copying it: batch mode does that for every migration.
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
