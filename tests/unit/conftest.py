import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On a shared 2-core machine two OpenMP threads per process spin against each other's load:
    # a 3-step warm start took 25 s with 2 threads and 4 s with 1 (measured). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
