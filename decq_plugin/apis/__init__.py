"""Entry points for scripts and notebooks: build a trained tokenizer (or
any model) from a config and a checkpoint; export and load weights as a
``config.json`` + ``model.safetensors`` folder."""
from .build import build_model_from_config, build_tokenizer_from_config
from .pretrained import export_pretrained, load_pretrained, save_pretrained

__all__ = ['build_model_from_config', 'build_tokenizer_from_config',
           'export_pretrained', 'load_pretrained', 'save_pretrained']
