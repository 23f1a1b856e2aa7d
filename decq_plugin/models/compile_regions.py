"""``torch.compile`` of a model's heavy regions, chosen in the config.

MMEngine's own ``compile=True`` compiles the whole ``train_step``, which
traces the optimizer wrapper and MMEngine's autocast helper and fails in
dynamo. The project's models compile their heavy regions instead, right
after they are built, from ``model.compile``::

    model = dict(type='LatentDiffusionModel', ...,
                 compile=True)                 # the model's default regions
    model = dict(..., compile=dict(regions=['denoiser'],   # whole denoiser
                                   mode='max-autotune-no-cudagraphs'))
    model = dict(..., compile=dict(memory_budget=0.8))  # less memory
    model = dict(..., compile=dict(enabled=False, memory_budget=0.8))
    # eager unless ``--compile`` (which sets enabled=True); compiled, with
    # this budget


``memory_budget`` (0 < b <= 1) is the activation memory budget of the
compiled regions' partitioner (``torch._functorch.config.
activation_memory_budget``): below 1 it recomputes the cheapest activations
in backward instead of saving them, trading a little speed for the memory
that buys a larger batch.

A region is a dotted path to a submodule. A ``ModuleList``/``Sequential``
region compiles each of its children ("regional compilation": blocks of one
class share one compiled graph, so a 28-block DiT compiles one body block,
not 28); any other module is compiled as a whole. Paths that lead to None
(an absent discriminator, say) are skipped.

Compilation is in place (``nn.Module.compile`` semantics): parameter names,
``state_dict`` keys and checkpoints do not change, and DDP wraps the model as
usual. Shapes are static (``dynamic=False``): a new batch size compiles once
more (e.g. the last, smaller batch of an epoch) instead of switching to
dynamic shapes. Deep copies (the EMA model) run eagerly: a copy cannot share
the compiled function of its source, which is bound to the source's weights.

The VFM encoder is never a region: condensers put forward hooks on its blocks
for every pass, which would recompile the blocks at each step.
"""
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

#: ``torch.compile`` arguments ``model.compile`` may set.
COMPILE_KWARGS = ('backend', 'mode', 'fullgraph', 'dynamic', 'options')
#: Keys of ``model.compile`` besides the ``torch.compile`` arguments.
REGION_KEYS = ('enabled', 'regions', 'memory_budget')


class CompiledCall:
    """The compiled ``__call__`` of one module.

    Held in ``module._compiled_call_impl`` (where ``nn.Module.compile``
    puts it). Deep-copying it gives None, so a copy of the module runs
    eagerly with its own weights. With ``memory_budget`` each call runs
    under that activation memory budget (the partition into forward and
    backward is decided at the first call).
    """

    def __init__(self, fn: Callable,
                 memory_budget: Optional[float] = None) -> None:
        self.fn = fn
        self.memory_budget = memory_budget

    def __call__(self, *args, **kwargs):
        if self.memory_budget is None:
            return self.fn(*args, **kwargs)
        from torch._functorch import config
        with config.patch(activation_memory_budget=self.memory_budget):
            return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> None:
        return None


def compile_module(module: nn.Module,
                   memory_budget: Optional[float] = None,
                   **kwargs) -> nn.Module:
    """Compile ``module``'s ``__call__`` in place; returns ``module``."""
    module._compiled_call_impl = CompiledCall(
        torch.compile(module._call_impl, **kwargs), memory_budget)
    return module


def is_compiled(module: nn.Module) -> bool:
    return isinstance(getattr(module, '_compiled_call_impl', None),
                      CompiledCall)


def _get(root: nn.Module, path: str) -> Optional[nn.Module]:
    node = root
    for part in path.split('.'):
        if node is None:
            return None
        if not hasattr(node, part):
            raise ValueError(
                f'compile region {path!r}: {type(node).__name__} has no '
                f'attribute {part!r}')
        node = getattr(node, part)
    if node is not None and not isinstance(node, nn.Module):
        raise ValueError(f'compile region {path!r} is a '
                         f'{type(node).__name__}, not a module')
    return node


def _targets(module: nn.Module) -> Iterable[nn.Module]:
    if isinstance(module, (nn.ModuleList, nn.Sequential)):
        return list(module)
    return [module]


def parse_compile_cfg(spec: Union[bool, dict, None],
                      default_regions: Sequence[str]) -> Optional[dict]:
    """``model.compile`` -> ``dict(regions=[...], **torch.compile kwargs)``
    or None (eager: False, None or ``enabled=False``). ``True`` means the
    default regions, inductor, static shapes."""
    if not isinstance(spec, (bool, dict, type(None))):
        raise TypeError(f'compile must be a bool or a dict, got {spec!r}')
    if not spec:
        return None
    cfg = {} if spec is True else dict(spec)
    enabled = cfg.pop('enabled', True)
    if not isinstance(enabled, bool):
        raise TypeError(f'compile: enabled must be True or False, got '
                        f'{enabled!r}')
    if not enabled:
        return None
    regions = cfg.pop('regions', None)
    regions = list(default_regions if regions is None else regions)
    budget = cfg.pop('memory_budget', None)
    if budget is not None and (isinstance(budget, bool) or
                               not isinstance(budget, (int, float)) or
                               not 0 < budget <= 1):
        raise ValueError(f'compile: memory_budget must be a number in '
                         f'(0, 1], got {budget!r}')
    if isinstance(regions, str) or not all(isinstance(r, str)
                                           for r in regions):
        raise TypeError(f'compile regions must be a list of dotted module '
                        f'paths, got {regions!r}')
    unknown = sorted(set(cfg) - set(COMPILE_KWARGS))
    if unknown:
        raise ValueError(f'compile: unknown keys {unknown}; allowed: '
                         f'{", ".join(REGION_KEYS + COMPILE_KWARGS)}')
    cfg.setdefault('dynamic', False)
    if budget is not None:
        cfg['memory_budget'] = float(budget)
    return dict(regions=regions, **cfg)


def compile_regions(model: nn.Module, spec: Union[bool, dict, None],
                    default_regions: Sequence[str] = ()) -> List[str]:
    """Compile the regions of ``model`` named by ``spec`` (see the module
    docstring); returns the paths of the modules compiled."""
    cfg = parse_compile_cfg(spec, default_regions)
    if cfg is None:
        return []
    regions = cfg.pop('regions')
    done: List[str] = []
    for path in regions:
        region = _get(model, path)
        if region is None:
            continue
        targets = _targets(region)
        for i, target in enumerate(targets):
            compile_module(target, **cfg)
            done.append(path if len(targets) == 1 and target is region
                        else f'{path}.{i}')
    return done


def recompile_counts() -> Dict[str, int]:
    """Dynamo's count of graphs compiled so far in this process
    (``{'frames': n}``): constant across steps means no recompilation."""
    from torch._dynamo.utils import counters
    return dict(frames=int(counters['stats'].get('unique_graphs', 0)))
