import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Small tensors run faster and steadier on one intra-op thread; restored after this package."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
