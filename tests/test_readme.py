"""The README's Python example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "PruningSpace" in block)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert (tmp_path / "plan.json").exists()
    x = torch.randn(2, 3, 32, 32)
    assert namespace["rebuilt"].eval()(x).equal(namespace["pruned"].eval()(x))
    assert sum(p.numel() for p in namespace["rebuilt"].parameters()) < sum(
        p.numel() for p in namespace["model"].parameters()
    )
