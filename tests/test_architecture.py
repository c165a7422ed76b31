"""One-way layers and lazy imports: a lower layer never imports a higher one, and ``import prune_search``
(or ``prune-search --help``) loads none of the search stack."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import prune_search
from prune_search.search import StartOptions, create_or_join, run_worker

PACKAGE = Path(prune_search.__file__).resolve().parent

# The layers, lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"models", "data", "training", "device", "threads", "errors", "lazy"},
    {"space"},
    {"evaluators"},
    {"search", "storage"},
    {"finalize"},
    {"sparse", "iterative", "sensitivity", "elastic", "evidence", "report"},
    {"cli", "__main__", "__init__"},  # the command line and the package's own lazy exports
]
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

# What ``import prune_search`` and ``prune-search --help`` must not load.
HEAVY = ("optuna", "optuna_dashboard", "sqlalchemy", "pymoo", "scipy")


def _part(module: str) -> str | None:
    """The top-level part of a ``prune_search`` module name (``prune_search.search.study`` → ``search``);
    ``__init__`` for the package itself, None outside it."""
    names = module.split(".")
    if names[0] != "prune_search":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``, function-level ones included; a ``from x import y`` counts
    as importing ``x.y`` (``y`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base == "prune_search":
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def layer_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the module ``module``) of a higher layer than ``module``'s own."""
    own = LAYER_OF[_part(module)]
    out = []
    for line, target in _imported(ast.parse(source), module, is_package):
        part = _part(target)
        if part is None or part not in LAYER_OF:
            continue
        if LAYER_OF[part] > own:
            out.append(
                f"{module} (line {line}) imports {target}: layer {own} ({_part(module)}) must not import "
                f"layer {LAYER_OF[part]} ({part})"
            )
    return out


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def test_every_module_belongs_to_a_layer():
    unknown = {_part(name) for name, _ in _modules()} - set(LAYER_OF)
    assert not unknown, f"put these parts of prune_search into LAYERS: {sorted(unknown)}"


def test_no_layer_imports_a_higher_one():
    violations = []
    for name, path in _modules():
        violations += layer_violations(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    assert not violations, "\n".join(violations)


def test_the_layer_check_sees_every_kind_of_import():
    source = """
import prune_search.finalize
from prune_search.sensitivity.allocate import scaled
from prune_search import cli
from .. import evidence


def later():
    from prune_search.sparse import masks
    import prune_search.report.html
"""
    found = layer_violations(source, "prune_search.search.study")
    targets = [line.split(" imports ")[1].split(":")[0] for line in found]
    assert targets == [
        "prune_search.finalize",
        "prune_search.sensitivity.allocate",
        "prune_search.cli",
        "prune_search.evidence",
        "prune_search.sparse",
        "prune_search.report.html",
    ]
    assert "prune_search.search.study (line 3) imports prune_search.sensitivity.allocate" in found[1]
    assert not layer_violations("from prune_search.space import PruningSpace\nimport torch\n", "prune_search.search")


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``heavy`` modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1].split()
    assert last[0] == "loaded:", result.stdout
    return last[1:]


def test_import_prune_search_loads_none_of_the_search_stack():
    assert _loaded_after("import prune_search") == []


def test_cli_help_loads_none_of_the_search_stack():
    code = """
import sys
from prune_search.cli import main
sys.argv = ["prune-search", "--help"]
try:
    main()
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""
    assert _loaded_after(code) == []


def test_reading_a_study_loads_neither_torch_pruning_nor_torchvision():
    """``front``, ``status``, ``report`` never trace or prune a model: ≈ 0.2 GB and 2 s less per command."""
    code = "import prune_search.cli.study, prune_search.cli.report, prune_search.finalize, prune_search.search.summary"
    assert _loaded_after(code, ("torch_pruning", "torchvision")) == []


@pytest.mark.parametrize("name", [n for n in prune_search.__all__ if n != "__version__"])
def test_the_python_api_is_exported_at_top_level(name):
    value = getattr(prune_search, name)
    assert value.__name__ == name
    assert name in dir(prune_search)


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--study", "light"],
        ["studies"],
        ["status", "--study", "light", "--format", "json"],
        ["front", "--study", "light", "--limit", "3"],
        ["report", "--study", "light", "--out", "light.html"],
    ],
)
def test_status_studies_front_and_report_answer_without_loading_torch(sqlite_url, digits_checkpoint, command, tmp_path):
    """They build nothing from a study: at 100,000 trials ``status`` took 7.9 s with torch's import, 2.3 s without,
    ``report`` 1.0 GB of memory with it, 0.2 GB without."""
    options = StartOptions(checkpoint=digits_checkpoint, population=20, calibration_batches=2, proxy="taylor_loss")
    handle, _ = create_or_join(sqlite_url, "light", options, device="cpu", progress=False)
    run_worker(handle, 40, seed=0)
    code = f"""
import sys
from prune_search.cli import main
sys.argv = ["prune-search", *{command!r}, "--storage", {sqlite_url!r}]
try:
    main()
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""
    result = subprocess.run(
        [sys.executable, "-c", code + "\nprint('loaded:', 'torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: False"
    shown = result.stdout
    expected = {
        "studies": "light\t40 trials\tprune-search",
        "status": "COMPLETE",
        "front": "front of study 'light'",
        "report": "wrote light.html",
    }
    assert expected[command[0]] in shown


def test_the_dashboard_command_loads_no_torch():
    assert _loaded_after("import prune_search.cli.dashboard", ("torch", "torch_pruning", "torchvision")) == []
