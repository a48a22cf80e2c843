"""Shared fixtures: the tiny SpLIP config and seeded inputs."""
from __future__ import annotations

import pytest
import torch

from splip_engine import SpLIPConfig, build_model


@pytest.fixture(scope="session")
def tiny_cfg() -> SpLIPConfig:
    return SpLIPConfig(clip_model="tiny", pretrained="")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    return build_model(tiny_cfg).eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
