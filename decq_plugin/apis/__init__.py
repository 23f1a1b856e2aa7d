"""Entry points for scripts and notebooks: build a trained tokenizer (or
any model) from a config and a checkpoint."""
from .build import build_model_from_config, build_tokenizer_from_config

__all__ = ['build_model_from_config', 'build_tokenizer_from_config']
