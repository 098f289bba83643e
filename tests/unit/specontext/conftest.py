import pytest

from tests.conftest import one_torch_thread

_one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)
