"""Watching runs: switch on TensorBoard and Weights & Biases by name.

The runtime of every config builds a :class:`RunVisualizer` with MMEngine's
``LocalVisBackend`` (``work_dir/<time>/vis_data/scalars.json``, read by
``tools/analysis/analyze_logs.py``). More backends are named, not spelt
out, so one command-line option adds them::

    python tools/train.py CONFIG \
        --cfg-options "visualizer.backends=[tensorboard,wandb]"
    # W&B settings: visualizer.wandb_kwargs.project=decq (wandb.init args)

or, in a config, ``visualizer = dict(backends=['tensorboard'])``. The
packages stay optional: a named backend whose package is missing fails at
start-up with the ``pip install`` line (TensorBoard: the ``tensorboard``
extra, ``pip install -e ".[tensorboard]"``), not at the first logged scalar.
"""
import importlib.util
from typing import Dict, List, Optional, Sequence, Union

from mmengine.visualization import Visualizer

from decq_plugin.registry import VISUALIZERS

#: backend name -> (MMEngine backend type, package it needs).
BACKENDS: Dict[str, tuple] = {
    'local': ('LocalVisBackend', None),
    'tensorboard': ('TensorboardVisBackend', 'tensorboard'),
    'wandb': ('WandbVisBackend', 'wandb'),
}

#: backend name -> the extra of ``setup.py`` that installs its package.
EXTRAS: Dict[str, str] = {'tensorboard': 'tensorboard'}


def install_hint(name: str, package: str) -> str:
    """The ``pip install`` line for the package of backend ``name``."""
    extra = EXTRAS.get(name)
    if extra is None:
        return f'pip install {package}'
    return (f'pip install -e ".[{extra}]" (from a clone of decq_plugin; '
            f'or pip install {package})')


def backend_configs(names: Union[str, Sequence[str]],
                    wandb_kwargs: Optional[dict] = None) -> List[dict]:
    """Backend configs for ``names`` (keys of :data:`BACKENDS`).

    Raises:
        ValueError: an unknown name.
        ImportError: the package of a named backend is not installed.
    """
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f'visualizer backend {name!r} is not one of '
                             f'{sorted(BACKENDS)}')
        backend_type, package = BACKENDS[name]
        if package and importlib.util.find_spec(package) is None:
            raise ImportError(
                f"visualizer backend '{name}' needs the '{package}' package: "
                f'{install_hint(name, package)}, or drop it from '
                'visualizer.backends')
        cfg = dict(type=backend_type)
        if name == 'wandb' and wandb_kwargs:
            cfg['init_kwargs'] = dict(wandb_kwargs)
        out.append(cfg)
    return out


@VISUALIZERS.register_module()
class RunVisualizer(Visualizer):
    """MMEngine's :class:`Visualizer` with backends also named in
    ``backends`` (``'tensorboard'``, ``'wandb'``, ``'local'``), added after
    those of ``vis_backends``.

    Args:
        backends: backend names, see :data:`BACKENDS`.
        wandb_kwargs: ``wandb.init`` arguments (project, entity, name ...).
        vis_backends, other args: see MMEngine's :class:`Visualizer`.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 vis_backends: Optional[Sequence[dict]] = None,
                 backends: Union[str, Sequence[str]] = (),
                 wandb_kwargs: Optional[dict] = None,
                 save_dir: Optional[str] = None,
                 **kwargs) -> None:
        configs = [dict(c) for c in vis_backends or []]
        configs += backend_configs(backends, wandb_kwargs)
        super().__init__(name=name, vis_backends=configs or None,
                         save_dir=save_dir, **kwargs)
