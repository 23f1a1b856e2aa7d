"""Checking timm model names before a model is built.

A name is accepted wherever ``timm.create_model`` accepts it: an
architecture (``'vit_base_patch14_reg4_dinov2'``) or an architecture with
a pretrained tag (``'vit_base_patch16_224.mae'``,
``'vit_small_patch8_224.dino'``); names
with a source prefix (``'hf-hub:...'``, ``'local-dir:...'``) are left to
timm. For anything else the error lists the closest names timm knows.
"""
import difflib
from typing import List

import timm


def close_timm_names(name: str, limit: int = 5) -> List[str]:
    """Up to ``limit`` timm names closest to ``name``: tagged names when
    ``name`` has a tag, architectures otherwise."""
    arch, _, tag = name.partition('.')
    if tag and timm.is_model(arch):  # a known architecture, unknown tag
        return timm.list_pretrained(f'{arch}.*')[:limit * 4]
    candidates = timm.list_pretrained() if tag else timm.list_models()
    return difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)


def check_timm_name(name: str, owner: str) -> str:
    """Return ``name`` when timm can build it, else raise ``ValueError``
    naming ``owner`` (e.g. ``'TimmViTEncoder'``) and the closest names."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'{owner}: model_name must be a non-empty string, '
                         f'got {name!r}')
    if ':' in name:  # 'hf-hub:<repo>' / 'local-dir:<path>': timm checks
        return name
    arch, _, tag = name.partition('.')
    known = timm.is_model(name)  # ignores the tag
    if known and tag:
        known = name in timm.list_pretrained(f'{arch}.*')
    if known:
        return name
    close = close_timm_names(name)
    if tag and timm.is_model(arch):
        hint = (f'timm knows {arch!r} but not the pretrained tag {tag!r}; '
                f'its tags: {close}')
    else:
        hint = (f'close names: {close}' if close else
                "no close name; see timm.list_models('*pattern*')")
    raise ValueError(f'{owner}: model_name={name!r} is not a timm model '
                     f'({hint})')
