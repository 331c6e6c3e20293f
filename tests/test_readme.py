"""The README's Python examples run as written (each after the ones before it)."""
import pathlib
import re

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)


def raises(block):
    return "# ValueError" in block


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    namespace = {}
    for block in BLOCKS[:index]:
        if not raises(block):
            exec(block, namespace)
    if raises(BLOCKS[index]):
        with pytest.raises(ValueError):
            exec(BLOCKS[index], namespace)
        return
    exec(BLOCKS[index], namespace)
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn):
            fn()
