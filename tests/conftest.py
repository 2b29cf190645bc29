import os

import pytest

# Quiet mediapipe / TensorFlow Lite logging in tests.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors, which run fastest on one thread on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
