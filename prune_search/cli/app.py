"""The ``prune-search`` application: every command, registered by name and loaded on first use.

A command's module is imported only when the command runs or shows its own ``--help``;
``prune-search --help`` lists the commands from :data:`COMMANDS` alone, so it imports none of
the search stack (Optuna, SQLAlchemy, pymoo, optuna-dashboard, plotly, ...).
"""

import os
import sys
from dataclasses import dataclass
from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from prune_search.errors import PruneSearchError
from prune_search.threads import SMALL_MACS, THREADS_ENV, requested_threads


@dataclass(frozen=True)
class Command:
    """A command: ``target`` is its function, ``"package.module:function"``; ``help`` its help text."""

    target: str
    help: str


# In the order ``prune-search --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": Command(
        "prune_search.cli.training:train",
        "Train a baseline model: SGD + cosine, best epoch on val, test reported once.",
    ),
    "evaluate": Command(
        "prune_search.cli.training:evaluate_command",
        "Accuracy and loss of a checkpoint on the val (or test) split.",
    ),
    "start": Command(
        "prune_search.cli.study:start",
        "Create or join a study and run NSGA-II until it holds --trials COMPLETE trials.",
    ),
    "front": Command(
        "prune_search.cli.front:front",
        "The study's feasible Pareto trials: keep counts, strategies, MACs, params, proxies.",
    ),
    "status": Command(
        "prune_search.cli.status:status_command",
        "Trials by state, workers seen, hypervolume (pymoo) and its history (--format csv: the history).",
    ),
    "finalize": Command(
        "prune_search.cli.finalize:finalize",
        "Prune a front trial for real, fine-tune it (KD), export it and record the result in the study.",
    ),
    "report": Command(
        "prune_search.cli.report:report",
        "Write a self-contained HTML report: fronts, hypervolume, keep ratios, importance, finalized models.",
    ),
    "dashboard": Command(
        "prune_search.cli.dashboard:dashboard",
        "Serve optuna-dashboard on the study's storage and artifact store.",
    ),
    "studies": Command(
        "prune_search.cli.status:studies",
        "Studies in the storage, with their trial counts.",
    ),
    "models": Command("prune_search.cli.catalog:models_command", "List the model zoo."),
    "datasets": Command("prune_search.cli.catalog:datasets_command", "List the datasets."),
    "iterative": Command(
        "prune_search.cli.iterative:iterative_command",
        "Iterative prune-retrain (geometric or fixed-fraction schedule) with an accuracy stop and dead-network check.",
    ),
    "sparsify": Command(
        "prune_search.cli.sparse:sparsify_command",
        "Unstructured magnitude pruning: exact per-layer sparsity, masks held while fine-tuning, CSR/bitmask sizes.",
    ),
    "compare": Command(
        "prune_search.cli.evidence:compare_command",
        "Fine-tune the front's trial and simple baselines at the same MACs budgets, and compare them.",
    ),
    "validate-proxy": Command(
        "prune_search.cli.evidence:validate_proxy_command",
        "Rank correlation of every proxy with briefly fine-tuned accuracy, within narrow MACs bands.",
    ),
    "sensitivity": Command(
        "prune_search.cli.sensitivity:sensitivity_command",
        "Per-group sensitivity on the val split: prune one group at a time, allocate keep ratios by --max-drop.",
    ),
    "elastic": Command(
        "prune_search.cli.elastic:elastic_command",
        "Store several front trials as nested widths of ONE checkpoint (prune-and-grow), optionally fine-tuned.",
    ),
}


def load_command(name: str) -> typer.core.TyperCommand:
    """The click command ``name``, built by Typer from its function (importing the function's module)."""
    entry = COMMANDS[name]
    module, _, function = entry.target.partition(":")
    single = typer.Typer(add_completion=False)
    single.command(name, help=entry.help)(getattr(import_module(module), function))
    return typer.main.get_command(single)


class _Listed(typer.core.TyperCommand):
    """A command as ``prune-search --help`` lists it: its name and help, nothing imported."""


class LazyGroup(TyperGroup):
    """The application's click group: each command of :data:`COMMANDS` is loaded when it is used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands.update({name: _Listed(name, help=entry.help) for name, entry in COMMANDS.items()})
        self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, _Listed) and not self._listing:
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    help="Multi-objective search for structured pruning of neural networks, on Optuna.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    threads: Annotated[
        int | None,
        typer.Option(
            help=f"Torch's CPU intra-op threads (or ${THREADS_ENV}). Default: 1 for small models (under "
            f"{SMALL_MACS // 1_000_000} M MACs per sample), else torch's own choice or OMP_NUM_THREADS.",
        ),
    ] = None,
) -> None:
    """Options of every command (Typer builds a group only for an app with a callback or commands)."""
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    requested_threads()  # a bad value is refused before any work


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except PruneSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if "sqlalchemy" not in sys.modules:  # no database was touched: a bug, shown as such
            raise
        from prune_search.storage.url import storage_error

        error = storage_error(exc, None)  # a database failure outside the retried paths (e.g. Optuna's reads)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
