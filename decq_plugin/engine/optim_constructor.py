"""One optimizer per named submodule (e.g. tokenizer and discriminator)."""
from typing import Optional

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from torch import nn

from decq_plugin.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SubmoduleOptimWrapperConstructor:
    """Build an :class:`OptimWrapperDict` whose keys are submodule names.

    Config::

        optim_wrapper = dict(
            constructor='SubmoduleOptimWrapperConstructor',
            tokenizer=dict(type='OptimWrapper', optimizer=dict(...)),
            discriminator=dict(type='OptimWrapper', optimizer=dict(...)))

    Each entry may carry its own ``paramwise_cfg``.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict) or not optim_wrapper_cfg:
            raise TypeError('optim_wrapper must be a dict of per-submodule '
                            f'optim wrapper configs, got {optim_wrapper_cfg}')
        if paramwise_cfg is not None:
            raise ValueError('give paramwise_cfg inside each submodule entry')
        self.optim_wrapper_cfg = optim_wrapper_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        if hasattr(model, 'module'):
            model = model.module
        wrappers = {}
        for name, cfg in self.optim_wrapper_cfg.items():
            if not hasattr(model, name) or getattr(model, name) is None:
                raise KeyError(
                    f"optim_wrapper key '{name}' is not a submodule of "
                    f'{type(model).__name__}')
            cfg = dict(cfg)
            paramwise = cfg.pop('paramwise_cfg', None)
            wrappers[name] = DefaultOptimWrapperConstructor(
                cfg, paramwise)(getattr(model, name))
        return OptimWrapperDict(**wrappers)
