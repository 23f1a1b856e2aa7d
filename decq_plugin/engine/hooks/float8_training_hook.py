"""The hook behind ``precision='fp8'``: float8 matmuls in the large linears
of the trained network, for training only."""
from typing import List, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from decq_plugin.registry import HOOKS


@HOOKS.register_module()
class Float8TrainingHook(Hook):
    """Swap the large linears of ``modules`` (dotted paths in the model,
    e.g. ``'denoiser'``) for torchao's ``Float8Linear`` when training
    starts; the layers and the recipe are chosen in
    :mod:`decq_plugin.models.fp8`.

    It runs in ``before_train``: after a resume has loaded the (plain)
    checkpoint and after the EMA copy was made, which therefore stays plain,
    as do ``tools/test.py``, ``sample.py`` and ``export.py``, which never
    train. The parameters stay the same objects, so the optimizer and the
    DDP wrapper need no rebuild; checkpoints keep ``nn.Linear``'s keys.
    ``apply_precision`` adds this hook for ``--precision fp8``.

    Args:
        modules: submodules to convert.
        recipe: torchao float8 recipe name.
        min_features: smallest in/out width converted.
    """

    priority = 'LOW'  # after EMAHook ('NORMAL') made its copy

    def __init__(self, modules: Sequence[str] = ('denoiser', ),
                 recipe: str = 'tensorwise',
                 min_features: int = 1024) -> None:
        from decq_plugin.models.fp8 import require_torchao
        require_torchao()  # fail when the runner is built, not mid-run
        self.modules = list(modules)
        self.recipe = recipe
        self.min_features = min_features
        self.converted: List[str] = []

    def before_train(self, runner) -> None:
        from decq_plugin.models.fp8 import convert_to_fp8_training
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        for path in self.modules:
            try:
                target = model.get_submodule(path)
            except AttributeError:
                raise ValueError(
                    f'Float8TrainingHook: the model has no submodule '
                    f'{path!r} (modules={self.modules})') from None
            names = convert_to_fp8_training(target, self.recipe,
                                            self.min_features)
            self.converted += [f'{path}.{name}' for name in names]
        print_log(f'fp8: {len(self.converted)} linear layers train in float8 '
                  f'({self.recipe}); the rest in bf16', logger='current')
