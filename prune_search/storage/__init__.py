"""Storage: URL resolution, engines with retries, the project's tables, bulk trial persistence."""

from prune_search.storage.bulk import TrialRecord, persist_generation, read_candidates
from prune_search.storage.url import DEFAULT_URL, ENV_VAR, create_engine, redact, resolve_url

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "TrialRecord",
    "create_engine",
    "persist_generation",
    "read_candidates",
    "redact",
    "resolve_url",
]
