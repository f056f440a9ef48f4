"""The README's commands and its Task example are what a newcomer copies: keep them true."""

import re
from pathlib import Path

from autocomp.tasks import load_task, torch_predictor

README = Path(__file__).parent.parent / "README.md"


def test_readme_task_example_loads_trains_and_evaluates(tmp_path):
    blocks = re.findall(r"```python\n(# my_task.py\n.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "my_task.py").write_text(blocks[0])
    task = load_task(f"{tmp_path / 'my_task.py'}:make_task")
    assert task.evaluate(torch_predictor(task.build_model())) > 0.9
    assert task.build_model(width=0.5)[0].out_features == 32


def test_ci_runs_the_readme_test_command_unchanged():
    commands = re.findall(r"```\n(pip install .*?)\n```", README.read_text())
    assert commands[0].endswith("autocomp search --device jetson-nano")
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
