"""Training test helpers: the synthetic CelebA-format data set of facialattr.training.synthetic as a fixture."""

from __future__ import annotations

import pytest

from facialattr.training.synthetic import make_celeba


@pytest.fixture(scope="session")
def celeba_factory():
    """``make_celeba(root, n_train=..., n_val=...)`` for tests that need their own copy."""
    return make_celeba
