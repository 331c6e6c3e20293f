"""The README's Python examples run as written, in order, in one namespace (each once)."""
import pathlib
import re

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)


def test_readme_examples_run():
    namespace = {}
    for block in BLOCKS:
        if "# ValueError" in block:  # an example of an error
            with pytest.raises(ValueError):
                exec(block, namespace)
            continue
        exec(block, namespace)
        for name, fn in list(namespace.items()):
            if name.startswith("test_") and callable(fn):
                fn()
                del namespace[name]
