"""The device tests share the export tests' tiny fixtures (a width-8 backbone, real CIFAR crops, tiny bundles)."""

from tests.export.conftest import *  # noqa: F401,F403 - pytest fixtures by name
