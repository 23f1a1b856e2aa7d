"""FP8 training of the large linear layers (torchao's float8 training).

The one place that says which layers run their matmuls in float8 (with bf16
autocast around them, ``precision='fp8'``):

* ``nn.Linear`` layers with both ``in_features`` and ``out_features`` at
  least :data:`FP8_MIN_FEATURES` and multiples of 16 (float8 GEMM tiles):
  in DiT-DH-XL the qkv, attention output and SwiGLU projections of the 28
  body blocks and the qkv and attention output of the 2 head blocks (their
  SwiGLU hidden width, 5461, is no multiple of 16): 116 layers;
* except those whose name contains one of :data:`FP8_KEEP_PRECISE`: the
  adaLN modulations (their output scales every activation), the timestep
  and label embedders, the input and output projections and the head's
  condition projections, which are small or sit at the ends of the
  network, where float8's 3-bit mantissa costs the most.

Recipe :data:`FP8_RECIPE` (``'tensorwise'``: one dynamic scale per tensor),
the one measured to keep the loss within 0.06% of bf16 over 30 steps of
DiT-DH-XL (issue 16). torchao is an optional extra:
``pip install -e ".[fp8]"``.

Float8 modules keep their weights in high precision and their
``state_dict`` keys are those of ``nn.Linear``, so checkpoints of an FP8 run
are plain: they resume, evaluate, export and sample like any other.
"""
from typing import List, Sequence

from torch import nn

FP8_RECIPE = 'tensorwise'
FP8_MIN_FEATURES = 1024
FP8_KEEP_PRECISE = ('modulation', 't_embedder', 'y_embedder', 'patch_in',
                    'query_in', 'patch_out', 'query_out', 'patch_cond',
                    'query_cond', 'final')
FP8_INSTALL = 'pip install -e ".[fp8]"  (torchao)'


def require_torchao():
    """torchao's float8 module, or an ImportError naming the install line."""
    try:
        from torchao import float8
    except ImportError as error:
        raise ImportError(
            f'precision fp8 needs torchao, which is not installed: '
            f'{FP8_INSTALL}') from error
    return float8


def fp8_linear_filter(module: nn.Module, name: str,
                      min_features: int = FP8_MIN_FEATURES,
                      keep_precise: Sequence[str] = FP8_KEEP_PRECISE
                      ) -> bool:
    """Whether ``module`` (named ``name`` in its model) trains in float8."""
    if not isinstance(module, nn.Linear):
        return False
    k, n = module.in_features, module.out_features
    if k < min_features or n < min_features or k % 16 or n % 16:
        return False
    return not any(part in name for part in keep_precise)


def convert_to_fp8_training(model: nn.Module,
                            recipe: str = FP8_RECIPE,
                            min_features: int = FP8_MIN_FEATURES
                            ) -> List[str]:
    """Swap the linears of ``model`` that :func:`fp8_linear_filter` picks
    for torchao's ``Float8Linear`` (in place, the same parameters); returns
    their names."""
    float8 = require_torchao()
    picked: List[str] = []

    def keep(module: nn.Module, name: str) -> bool:
        if fp8_linear_filter(module, name, min_features):
            picked.append(name)
            return True
        return False

    float8.convert_to_float8_training(
        model, config=float8.Float8LinearConfig.from_recipe_name(recipe),
        module_filter_fn=keep)
    return picked
