"""Per-element latent normalisation from a statistics file.

The file (written by ``tools/compute_latent_stats.py``) is a torch file of
plain tensors, loaded with ``weights_only=True``::

    {'patch_mean': [C,h,w], 'patch_var': [C,h,w],
     'query_mean': [Q,C],   'query_var': [Q,C],     # DecQ only
     'count': [] (images seen)}

RAE's statistics files (``{'mean': [C,h,w], 'var': [C,h,w]}``, as RAE's
``calculate_stat.py`` writes them) load too, as the patch statistics.

``normalise(z) = (z - mean) / sqrt(var + eps)`` per latent type.
"""
import os
from typing import Dict, Optional, Tuple

import torch
from torch import nn

Latents = Dict[str, torch.Tensor]


class LatentStatsError(ValueError):
    """A statistics file is missing or does not fit the tokenizer."""


def rae_stats_as_patch_stats(stats: Dict[str, torch.Tensor]
                             ) -> Dict[str, torch.Tensor]:
    """``stats`` with RAE's ``mean`` / ``var`` renamed ``patch_mean`` /
    ``patch_var`` (unchanged when it already has patch statistics)."""
    if 'patch_mean' in stats or not {'mean', 'var'} <= set(stats):
        return dict(stats)
    out = {k: v for k, v in stats.items() if k not in ('mean', 'var')}
    out['patch_mean'], out['patch_var'] = stats['mean'], stats['var']
    return out


class LatentNormalizer(nn.Module):
    """Holds latent statistics as buffers (so checkpoints carry them).

    Args:
        shapes: latent shapes per type, e.g.
            ``{'patch': (768, 16, 16), 'query': (8, 768)}``.
        stats_path: statistics file; ``None`` means identity until
            :meth:`load` or :meth:`set_stats` is called.
        eps: added to the variance.
    """

    def __init__(self,
                 shapes: Dict[str, Tuple[int, ...]],
                 stats_path: Optional[str] = None,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.eps = eps
        for key, shape in self.shapes.items():
            self.register_buffer(f'{key}_mean', torch.zeros(shape))
            self.register_buffer(f'{key}_var', torch.ones(shape))
        self.register_buffer('enabled', torch.zeros((), dtype=torch.bool))
        if stats_path is not None:
            self.load(stats_path)

    def load(self, path: str) -> None:
        """Load statistics from ``path`` (see the module docstring)."""
        if not os.path.isfile(path):
            raise LatentStatsError(
                f"latent statistics file '{path}' does not exist; write it "
                'with tools/compute_latent_stats.py CONFIG CHECKPOINT --out '
                f'{path}')
        from decq_plugin.engine.checkpoint import safe_load_checkpoint
        try:  # plain tensors only; the error names the file
            stats = safe_load_checkpoint(
                path, expected="latent statistics ({key}_mean/{key}_var "
                'tensors, written by tools/compute_latent_stats.py)')
        except ValueError as err:
            raise LatentStatsError(
                f'{err} (config key: model.tokenizer.latent_stats, or '
                '--stats); write the file again with '
                'tools/compute_latent_stats.py') from None
        if not isinstance(stats, dict):
            raise LatentStatsError(f"'{path}' is not a latent stats file")
        self.set_stats(stats, source=path)

    def set_stats(self, stats: Dict[str, torch.Tensor],
                  source: str = 'stats') -> None:
        """Copy ``{key}_mean`` / ``{key}_var`` tensors into the buffers
        (RAE's ``mean`` / ``var`` stand for ``patch_mean`` / ``patch_var``;
        a leading batch dimension of 1 is dropped)."""
        stats = rae_stats_as_patch_stats(stats)
        for key, shape in self.shapes.items():
            for part in ('mean', 'var'):
                name = f'{key}_{part}'
                if name not in stats:
                    raise LatentStatsError(f"{source} has no '{name}' "
                                           f'(keys: {sorted(stats)})')
                if not torch.is_tensor(stats[name]):
                    raise LatentStatsError(
                        f"{source}: '{name}' is a "
                        f'{type(stats[name]).__name__}, not a tensor; write '
                        'the file with tools/compute_latent_stats.py')
                value = torch.as_tensor(stats[name], dtype=torch.float32)
                if value.dim() == len(shape) + 1 and value.shape[0] == 1:
                    value = value[0]
                if tuple(value.shape) != shape:
                    raise LatentStatsError(
                        f"{source}: '{name}' has shape {tuple(value.shape)}, "
                        f'the tokenizer makes {shape}')
                getattr(self, name).copy_(value)
        self.enabled.fill_(True)

    def _apply_stats(self, latents: Latents, forward: bool) -> Latents:
        if not bool(self.enabled):
            return dict(latents)
        out = {}
        for key, z in latents.items():
            if key not in self.shapes:
                out[key] = z
                continue
            mean = getattr(self, f'{key}_mean').to(z.dtype)
            std = (getattr(self, f'{key}_var') + self.eps).sqrt().to(z.dtype)
            out[key] = (z - mean) / std if forward else z * std + mean
        return out

    def normalize(self, latents: Latents) -> Latents:
        """Raw latents -> normalised latents (identity without stats)."""
        return self._apply_stats(latents, forward=True)

    def denormalize(self, latents: Latents) -> Latents:
        """Normalised latents -> raw latents (identity without stats)."""
        return self._apply_stats(latents, forward=False)
