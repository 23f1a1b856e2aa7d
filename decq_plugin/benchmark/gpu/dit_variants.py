"""Variants of the DiT-DH-XL train step (SDPA backend tried first:
``cudnn`` (``DiTDH``'s default), ``flash``, ``efficient``, or ``torch`` for
PyTorch's own order; memory budget,
activation checkpointing, whole-model compile, token-major attention,
inductor options, the fused Triton kernels of :mod:`decq_plugin.ops`
(all: ``fused``; a subset: ``fused=add_norm/swiglu``; none unless named,
whatever ``DiTDH``'s default), DecQ's split query attention (``qsplit``,
``layers.attend``),
float8 training of :mod:`decq_plugin.models.fp8`), the fused kernels'
outputs recomputed in the backward (``recompute``: norms and SwiGLU;
``recompute=swiglu``: a subset; needs ``fused``), each through
:func:`.dit_step.time_dit`."""
import json
from typing import Callable, List

import torch

from decq_plugin.ops.fused_block import FUSED_OPS
from .dit_step import build_dit, time_dit
from .kernel_profile import profile_steps


def parse_variant(spec: str) -> dict:
    mode, _, opts = spec.partition(':')
    if mode not in ('rae', 'decq'):
        raise ValueError(f'variant {spec!r}: mode must be rae or decq')
    out = dict(name=spec, queries=8 if mode == 'decq' else 0, sdpa=None,
               budget=None, ckpt=0, whole=False, bshd=False, options={},
               mode=None, fused=(), fp8=False, qsplit=False,
               recompute=False)
    for opt in filter(None, (opts or 'default').split('+')):
        if opt == 'default':
            continue
        if opt in ('cudnn', 'flash', 'efficient', 'torch'):
            out['sdpa'] = opt
        elif opt.startswith('budget='):
            out['budget'] = float(opt.split('=', 1)[1])
        elif opt.startswith('ckpt='):
            out['ckpt'] = int(opt.split('=', 1)[1])
        elif opt == 'whole':
            out['whole'] = True
        elif opt == 'bshd':
            out['bshd'] = True
        elif opt == 'fused':
            out['fused'] = FUSED_OPS
        elif opt.startswith('fused='):
            out['fused'] = tuple(opt.split('=', 1)[1].split('/'))
            unknown = sorted(set(out['fused']) - set(FUSED_OPS))
            if unknown:
                raise ValueError(f'variant {spec!r}: unknown fused ops '
                                 f'{unknown} (known: {FUSED_OPS})')
        elif opt == 'recompute':
            out['recompute'] = True
        elif opt.startswith('recompute='):
            out['recompute'] = tuple(opt.split('=', 1)[1].split('/'))
        elif opt == 'qsplit':
            out['qsplit'] = True
        elif opt == 'fp8':
            out['fp8'] = True
        elif opt == 'cdt':
            out['options']['coordinate_descent_tuning'] = True
        elif opt == 'autotune':
            out['mode'] = 'max-autotune-no-cudagraphs'
        else:
            raise ValueError(f'variant {spec!r}: unknown option {opt!r}')
    return out


def variant_compile(var: dict, dry: bool) -> Callable:
    """The function that compiles a model as variant ``var`` says."""
    from decq_plugin.models.compile_regions import (compile_module,
                                                    compile_regions)
    kwargs = dict(backend='eager') if dry else {}
    if not dry:
        if var['options']:
            kwargs['options'] = var['options']
        if var['mode']:
            kwargs['mode'] = var['mode']
    if var['budget'] is not None:
        kwargs['memory_budget'] = var['budget']

    def apply(model):
        if var['whole']:
            return compile_module(model, dynamic=False, **kwargs)
        compile_regions(model, kwargs or True, ['body_blocks', 'head_blocks'])
        return model
    return apply


def run_dit_variant(var: dict, plan, iters: int, with_profile: bool) -> dict:
    """One variant through ``dit_step.time_dit`` (the same step), with
    the kernel table of the step and of the CFG forward when asked."""
    from decq_plugin.models.diffusion.layers import Attention
    torch._dynamo.reset()
    torch.manual_seed(0)
    Attention.token_major = var['bshd']
    try:
        model, ch, grid = build_dit(
            plan, 'XL', var['queries'], grad_checkpoint=var['ckpt'],
            fused_kernels=var['fused'] or False,
            recompute_fused=var['recompute'],
            attention_backends=var['sdpa'] or True)
        if var['qsplit']:  # measured slower: an option of this tool only
            for module in model.modules():
                if isinstance(module, Attention):
                    module.split_at = model.num_patches
        if var['fp8']:
            from decq_plugin.models.fp8 import convert_to_fp8_training
            convert_to_fp8_training(model)
        out = time_dit(
            plan, model, ch, grid, var['queries'], plan.batch2,
            variant_compile(var, plan.dry), ceiling=None,
            cfg_forward=with_profile, iters=iters,
            profile=(lambda fn: profile_steps(fn, 2))
            if with_profile else None)
        del model
    finally:
        Attention.token_major = False
    return dict(variant=var['name'], **out)


def run_rae_code(plan, rae_src: str, iters: int, with_profile: bool) -> dict:
    """The public RAE code's DiT-DH-XL (``src/`` at ``rae_src``) through
    the same step as :func:`run_dit_variant`, compiled whole as its trainer
    compiles it: the ``rae-code`` row."""
    from .dit_step import time_rae_code
    out = time_rae_code(plan, rae_src, plan.batch2, None,
                        cfg_forward=with_profile, iters=iters,
                        profile=(lambda fn: profile_steps(fn, 2))
                        if with_profile else None)
    return dict(variant='rae-code', **out)


def bench_dit(plan, variants: List[str], iters: int) -> List[dict]:
    rows, seen = [], set()
    for spec in variants:
        var = parse_variant(spec)
        first = var['queries'] not in seen
        seen.add(var['queries'])
        try:
            row = run_dit_variant(var, plan, iters, with_profile=first)
        except Exception as err:  # keep the other variants' numbers
            row = dict(variant=spec,
                       error=f'{type(err).__name__}: {err}'[:500])
            if plan.device == 'cuda':
                torch.cuda.empty_cache()
        rows.append(row)
        print('dit', json.dumps({k: v for k, v in row.items()
                                 if 'kernels' not in k}), flush=True)
    return rows
