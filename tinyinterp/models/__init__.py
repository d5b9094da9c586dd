"""Model shapes, the fast training model and its 1:1 mapping onto HookedTransformer."""

from tinyinterp.models.config import ModelConfig
from tinyinterp.models.convert import from_hooked_state_dict, to_hooked_state_dict
from tinyinterp.models.hooked import check_weights, hooked_config
from tinyinterp.models.presets import PRESETS, preset_config, preset_model_config
from tinyinterp.models.transformer import TinyTransformer

__all__ = ["ModelConfig", "PRESETS", "preset_config", "preset_model_config", "TinyTransformer", "to_hooked_state_dict",
           "from_hooked_state_dict", "hooked_config", "check_weights"]
