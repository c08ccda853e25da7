"""Small models with every parameter random, for tests that compare two computations of one model."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def randomized(build: Callable[[], M], seed: int = 0, std: float = 0.05) -> M:
    """`build()` under `seed`, every parameter then drawn from N(0, std): the layers a model initialises to zero
    (modulations, output heads) too, so that every path does work. In eval mode."""
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()
