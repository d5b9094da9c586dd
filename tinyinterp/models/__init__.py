"""Model shapes, the fast training model and its 1:1 mapping onto HookedTransformer."""

from tinyinterp.models.convert import from_hooked_state_dict, to_hooked_state_dict
from tinyinterp.models.presets import PRESETS, preset_config
from tinyinterp.models.transformer import TinyTransformer

__all__ = ["PRESETS", "preset_config", "TinyTransformer", "to_hooked_state_dict", "from_hooked_state_dict"]
