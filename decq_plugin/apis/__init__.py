"""Entry points for scripts and notebooks: build a trained tokenizer (or
any model) from a config and a checkpoint; start from RAE's released
weights; export and load weights as a ``config.json`` +
``model.safetensors`` folder."""
from .build import build_model_from_config, build_tokenizer_from_config
from .convert_rae import convert_rae_checkpoint
from .pretrained import export_pretrained, load_pretrained, save_pretrained

__all__ = [
    'build_model_from_config', 'build_tokenizer_from_config',
    'convert_rae_checkpoint', 'export_pretrained', 'load_pretrained',
    'save_pretrained'
]
