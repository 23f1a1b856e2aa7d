"""Entry points for scripts and notebooks: build a trained tokenizer (or
any model) from a config and a checkpoint; start from RAE's released
weights (also diffusers' ``AutoencoderRAE`` folders); export and load
weights as a ``config.json`` + ``model.safetensors`` folder, or an RAE
tokenizer as an ``AutoencoderRAE`` folder; sample a stage-2 model to an ADM
``.npz``; cache a tokenizer's latents of a dataset. The tools in ``tools/``
are command lines over these."""
from .build import build_model_from_config, build_tokenizer_from_config
from .convert_rae import convert_rae_checkpoint
from .diffusers_format import export_diffusers, save_diffusers
from .extraction_inputs import (build_extraction_dataset,
                                build_extraction_tokenizer)
from .import_diffusers import convert_diffusers_rae, import_diffusers_rae
from .latent_extraction import extract_latents
from .pretrained import export_pretrained, load_pretrained, save_pretrained
from .sampling import sample_to_npz
from .sampling_model import load_sampling_model

__all__ = [
    'build_extraction_dataset', 'build_extraction_tokenizer',
    'build_model_from_config', 'build_tokenizer_from_config',
    'convert_diffusers_rae', 'convert_rae_checkpoint', 'export_diffusers',
    'export_pretrained', 'extract_latents', 'import_diffusers_rae',
    'load_pretrained', 'load_sampling_model', 'sample_to_npz',
    'save_diffusers', 'save_pretrained'
]
