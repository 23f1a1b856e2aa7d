"""Fixed 2D sine-cosine position embeddings."""
import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Positions ``[N]`` -> embeddings ``[N, dim]`` (sin half, cos half)."""
    if dim % 2:
        raise ValueError(f'dim={dim} must be even')
    freqs = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    freqs = 1.0 / 10000**freqs
    angles = positions.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """A ``height x width`` grid -> embeddings ``[height*width, dim]``, row
    major; the first half of the channels encodes the row, the second half
    the column."""
    if dim % 4:
        raise ValueError(f'dim={dim} must be a multiple of 4')
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    emb = torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], 1)
    return emb.float()
