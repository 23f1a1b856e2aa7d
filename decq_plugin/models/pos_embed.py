"""Fixed 2-D sine-cosine position embeddings (one definition for the pixel
decoder and DiT-DH).

Layout as DiT / MAE / RAE write it, so their tables and weights carry over
unchanged: tokens in row-major order; the first half of the channels
encodes the token's *column*, the second half its *row*; each half is
``[sin | cos]`` of ``pos * 10000 ** (-k / (dim / 4))`` for ``k < dim / 4``.
"""
import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Positions ``[N]`` -> embeddings ``[N, dim]`` (sin half, cos half),
    float64."""
    if dim % 2:
        raise ValueError(f'dim={dim} must be even')
    freqs = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    freqs = 1.0 / 10000**freqs
    angles = positions.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """A ``height x width`` grid -> embeddings ``[height*width, dim]``
    float32, row-major tokens; channels ``[column code | row code]``."""
    if dim % 4:
        raise ValueError(f'dim={dim} must be a multiple of 4')
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], 1)
    return emb.float()
