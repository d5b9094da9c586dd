"""Training: configuration, the loop, resumable state, torchrun support."""

from tinyinterp.train.config import TrainConfig
from tinyinterp.train.run import train

__all__ = ["TrainConfig", "train"]
