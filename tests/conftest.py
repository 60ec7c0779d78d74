import sys
from pathlib import Path

# Test helpers (the official-layout reference model) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, on a machine without a CUDA GPU."""
    import pytest
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none visible on this machine)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)
