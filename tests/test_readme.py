"""Each of the README's Python examples runs on its own, as written (a fresh namespace per block)."""
import pathlib
import re

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs_on_its_own(block):
    namespace = {}
    if "# ValueError" in block:  # an example of an error
        with pytest.raises(ValueError):
            exec(block, namespace)
        return
    exec(block, namespace)
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn):
            fn()


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4
