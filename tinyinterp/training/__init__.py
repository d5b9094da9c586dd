"""Training: configuration, the loop, resumable state, torchrun support."""

from tinyinterp.training.config import TrainConfig
from tinyinterp.training.run import train

__all__ = ["TrainConfig", "train"]
