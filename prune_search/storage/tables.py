"""The project's own tables, beside Optuna's in the same database.

- ``prune_search_study_data``: study-wide blobs (space, importance) too large for Optuna's
  attribute columns (64 KB TEXT on MySQL);
- ``prune_search_candidates``: one compact row per trial (genes, objectives, constraint
  violation) with a unique digest per study, so workers read new trials incrementally and
  never evaluate a candidate twice;
- ``prune_search_workers``: one row per worker process, with its last heartbeat;
- ``prune_search_finalize_claims``: which trial a finalize worker took, so that workers sharing
  a storage never finalize the same trial twice.
"""

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import LONGTEXT

metadata = MetaData()
LongText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")

study_data = Table(
    "prune_search_study_data",
    metadata,
    Column("study_id", Integer, primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", LongText, nullable=False),
)

candidates = Table(
    "prune_search_candidates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, nullable=False, index=True),
    Column("trial_id", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("digest", String(40), nullable=False),
    Column("genes", Text, nullable=False),
    Column("objectives", Text, nullable=False),
    Column("violation", Float, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("worker_id", Integer, nullable=False),
    UniqueConstraint("study_id", "digest", name="uq_prune_search_candidate"),
)

workers = Table(
    "prune_search_workers",
    metadata,
    Column("worker_id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("trials", Integer, nullable=False, default=0),
)

finalize_claims = Table(
    "prune_search_finalize_claims",
    metadata,
    Column("study_id", Integer, primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("out", String(1024), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("claimed_at", DateTime, nullable=False),
)

measurements = Table(
    "prune_search_measurements",
    metadata,
    Column("study_id", Integer, primary_key=True),
    Column("digest", String(40), primary_key=True),
    Column("number", Integer, nullable=False),
    Column("trial_id", Integer, nullable=False),
    Column("worker_id", Integer, nullable=False),
    Column("claimed_at", DateTime, nullable=False),
    Column("scores", Text, nullable=True),
)
