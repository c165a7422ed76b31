"""A sensitivity scan in a study: ``--sensitivity`` / ``--sensitivity-use`` resolved into the
per-group floors, generation-0 seeds and configuration entries that ``search.create_or_join`` takes."""

from dataclasses import replace
from pathlib import Path
from typing import Any

from prune_search.errors import PruneSearchError
from prune_search.search import StartOptions, StudyHandle, create_or_join
from prune_search.search.study import clash_error, validate
from prune_search.sensitivity.allocate import scaled
from prune_search.sensitivity.result import SENSITIVITY_USES, read_sensitivity


def _check_use(scan: Path | None, use: str | None) -> None:
    """A one-line error unless ``--sensitivity`` / ``--sensitivity-use`` go together and the scan is readable."""
    if use is not None and scan is None:
        raise PruneSearchError("--sensitivity-use needs --sensitivity DIR_OR_JSON")
    if use is not None and use not in SENSITIVITY_USES:
        raise PruneSearchError(f"--sensitivity-use must be {' or '.join(SENSITIVITY_USES)}, got '{use}'")
    if scan is not None:
        read_sensitivity(scan)


def with_scan(options: StartOptions, scan: Path | None, use: str | None = None) -> StartOptions:
    """``options`` for a new study that uses the scan in ``scan`` (a folder or its sensitivity.json):

    - ``seed`` (the default): the allocation and its :func:`~prune_search.sensitivity.allocate.scaled`
      variants are candidates of generation 0;
    - ``bound``: the allocation floors each group's keep ratio.

    The study records ``{"sensitivity": {file, use, max_drop, ratios}}``; the scan must have been
    made for the study's model (its groups and sizes are checked against the base model's space).
    """
    _check_use(scan, use)
    if scan is None:
        return options
    result = read_sensitivity(scan)
    use = use or SENSITIVITY_USES[0]
    ratios = result.allocation["ratios"]
    entry = {"file": str(scan), "use": use, "max_drop": result.allocation["max_drop"], "ratios": ratios}
    recorded = {**(options.recorded or {}), "sensitivity": entry}
    resolved = replace(options, recorded=recorded, check_space=result.check_matches)
    if use == "bound":
        return replace(resolved, group_min_ratio=ratios)
    return replace(resolved, seeds=[ratios, *scaled(ratios)])


def scan_clash(config: dict[str, Any], scan: Path | None, use: str | None = None) -> str | None:
    """The flags ``--sensitivity scan --sensitivity-use use`` if a study's ``config`` holds another scan or use."""
    if scan is None:
        return None
    entry = config.get("sensitivity")
    ratios = read_sensitivity(scan).allocation["ratios"]
    use = use or SENSITIVITY_USES[0]
    if entry is None or entry["ratios"] != ratios or entry["use"] != use:
        held = f"{entry['file']} used as {entry['use']}" if entry else "none"
        return f"--sensitivity {scan} --sensitivity-use {use} (the study has {held})"
    return None


def create_or_join_with_scan(
    url: str,
    name: str,
    options: StartOptions,
    scan: Path | None = None,
    use: str | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[StudyHandle, bool]:
    """``search.create_or_join`` with ``--sensitivity scan --sensitivity-use use``: a new study is
    made with the scan (:func:`with_scan`); a joining worker's scan must be the study's (same
    allocation, same use). Returns (handle, created)."""
    validate(options)
    handle, created = create_or_join(url, name, with_scan(options, scan, use), device=device, progress=progress)
    clash = None if created else scan_clash(handle.config, scan, use)
    if clash:
        raise clash_error(name, clash)
    return handle, created
