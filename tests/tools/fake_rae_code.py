"""A stand-in for the public RAE code's ``src/`` (not shipped): a
``stage2/models/DDT.py`` whose ``DiTwDDTHead`` takes the real constructor's
arguments, for the benchmark tools' ``--rae-src`` rows."""
import contextlib
import sys
from pathlib import Path
from typing import Iterator

FAKE_RAE_DDT = '''
import torch
from torch import nn


class DiTwDDTHead(nn.Module):
    def __init__(self, input_size, patch_size, in_channels, hidden_size,
                 depth, num_heads, **kwargs):
        super().__init__()
        self.kwargs = kwargs
        self.proj = nn.Conv2d(in_channels, in_channels, 1)
        self.table = torch.zeros(1)  # made on the CPU, like the real code

    def forward(self, x, t, y):
        return self.proj(x) * (1 + t.view(-1, 1, 1, 1))
'''


@contextlib.contextmanager
def fake_rae_src(root: Path) -> Iterator[str]:
    """Write the stand-in under ``root/src`` and yield that folder; its
    modules leave ``sys.modules`` (and the folder ``sys.path``) after."""
    models = root / 'src' / 'stage2' / 'models'
    models.mkdir(parents=True)
    for folder in (models.parent, models):
        (folder / '__init__.py').write_text('')
    (models / 'DDT.py').write_text(FAKE_RAE_DDT)
    src = str(root / 'src')
    try:
        yield src
    finally:
        for name in ('stage2.models.DDT', 'stage2.models', 'stage2'):
            sys.modules.pop(name, None)
        while src in sys.path:
            sys.path.remove(src)
