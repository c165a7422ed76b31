"""A sensitivity scan on disk (JSON + CSV), read back and checked against a model's space."""

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prune_search.errors import PruneSearchError
from prune_search.space import PruningSpace

JSON_FILE = "sensitivity.json"
CSV_FILE = "sensitivity.csv"
FORMAT = "prune-search-sensitivity"
VERSION = 1
SENSITIVITY_USES = ("seed", "bound")


@dataclass(frozen=True)
class ScanRow:
    """Val accuracy with one group kept at ``ratio`` (``keep`` of its ``size`` channels), every other group full.

    ``val_acc`` is in [0, 1]; ``drop_pts`` = 100 · (base val accuracy − ``val_acc``), in percentage points.
    """

    group: str
    size: int
    ratio: float
    keep: int
    val_acc: float
    drop_pts: float


@dataclass
class SensitivityResult:
    """What ``prune-search sensitivity`` writes to ``sensitivity.json``.

    ``groups``: channels per group, in the space's order. ``rows``: one per group × scanned
    ratio. ``allocation``: ``max_drop`` (points), keep ``ratios`` and ``keep`` counts per group,
    and the measured MACs, params and val accuracy of the allocated candidate. ``config``: how
    the scan was made (model, checkpoint hash, data, criterion, BN recalibration, ratios).
    """

    config: dict[str, Any]
    base_val_acc: float
    groups: dict[str, int]
    rows: list[ScanRow]
    allocation: dict[str, Any]
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config,
            "base_val_acc": self.base_val_acc,
            "groups": [{"name": name, "size": size} for name, size in self.groups.items()],
            "scan": [asdict(row) for row in self.rows],
            "allocation": self.allocation,
        }

    def write(self, out: Path) -> tuple[Path, Path]:
        """Write ``sensitivity.json`` and ``sensitivity.csv`` into the folder ``out``; returns their paths."""
        out.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out / JSON_FILE, out / CSV_FILE
        json_path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["group", "size", "ratio", "keep", "val_acc", "drop_pts"])
            for row in self.rows:
                writer.writerow([row.group, row.size, row.ratio, row.keep, f"{row.val_acc:.6f}", f"{row.drop_pts:.4f}"])
        return json_path, csv_path

    def check_matches(self, space: PruningSpace) -> None:
        """Raise a one-line error unless the scan's groups (names and sizes) are exactly ``space``'s."""
        here = dict(zip(space.names, space.sizes.tolist(), strict=True))
        where = f"sensitivity file {self.source} (made for {self.config.get('model', {}).get('name', '?')})"
        ignored = self.config.get("ignored_layers") or []
        same = f" (it was made with --ignore-layers {','.join(ignored)}: pass the same)" if ignored else ""
        for name, size in self.groups.items():
            if name not in here:
                raise PruneSearchError(
                    f"{where} does not match this model: its group '{name}' is not in the model{same}"
                )
            if here[name] != size:
                raise PruneSearchError(
                    f"{where} does not match this model: group '{name}' has {size} channels there, {here[name]} here"
                )
        missing = [name for name in here if name not in self.groups]
        if missing:
            raise PruneSearchError(f"{where} does not match this model: it lacks group '{missing[0]}'{same}")


def read_sensitivity(path: Path) -> SensitivityResult:
    """The scan in ``path``: a folder holding ``sensitivity.json``, or that JSON file itself."""
    path = Path(path)
    file = path / JSON_FILE if path.is_dir() else path
    if not file.is_file():
        raise PruneSearchError(f"no sensitivity file at {file}; write one with: prune-search sensitivity --out DIR")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(data.get("format"))
        result = SensitivityResult(
            config=data["config"],
            base_val_acc=float(data["base_val_acc"]),
            groups={g["name"]: int(g["size"]) for g in data["groups"]},
            rows=[ScanRow(**row) for row in data["scan"]],
            allocation=data["allocation"],
            source=str(file),
        )
        ratios = result.allocation["ratios"]
        if set(ratios) != set(result.groups) or not all(0 < float(r) <= 1 for r in ratios.values()):
            raise ValueError("allocation")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise PruneSearchError(
            f"{file} is not a prune-search sensitivity file (write one with: prune-search sensitivity --out DIR)"
        ) from None
    return result
