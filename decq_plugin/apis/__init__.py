"""Entry points for scripts and notebooks: build a trained tokenizer (or
any model) from a config and a checkpoint; start from RAE's released
weights (also diffusers' ``AutoencoderRAE`` folders); export and load
weights as a ``config.json`` + ``model.safetensors`` folder, or an RAE
tokenizer as an ``AutoencoderRAE`` folder."""
from .build import build_model_from_config, build_tokenizer_from_config
from .convert_rae import convert_rae_checkpoint
from .diffusers_format import export_diffusers, save_diffusers
from .import_diffusers import convert_diffusers_rae, import_diffusers_rae
from .pretrained import export_pretrained, load_pretrained, save_pretrained

__all__ = [
    'build_model_from_config', 'build_tokenizer_from_config',
    'convert_diffusers_rae', 'convert_rae_checkpoint', 'export_diffusers',
    'export_pretrained', 'import_diffusers_rae', 'load_pretrained',
    'save_diffusers', 'save_pretrained'
]
