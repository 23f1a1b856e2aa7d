"""Every random state of a process, as plain data a checkpoint can hold.

A resumed run continues exactly where the saved one stopped only if each
random number generator it draws from continues too: python's ``random``,
numpy's global RNG, torch's CPU RNG and every CUDA device's RNG. The
per-sample augmentation randomness of the data loaders does not live in
these (see :mod:`decq_plugin.datasets.sample_seed`).

:func:`capture` returns tensors, ints and tuples only, so the checkpoint
still loads with ``torch.load(weights_only=True)`` and no allowed globals;
:func:`restore` validates what it is given before touching any RNG.
"""
import random
from typing import Any, Dict, List

import numpy as np
import torch

RandomState = Dict[str, Any]


class RandomStateError(ValueError):
    """A stored random state is malformed."""


def capture() -> RandomState:
    """The random states of this process (plain data)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: RandomState = dict(
        python=dict(version=int(version), internal=list(internal),
                    gauss_next=gauss_next),
        numpy=dict(kind=str(kind), keys=torch.from_numpy(keys.astype(
            np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(gauss)),
        torch=torch.get_rng_state(),
        cuda=[])
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = list(torch.cuda.get_rng_state_all())
    return state


def _check(state: Any, where: str) -> None:
    ok = isinstance(state, dict) and {'python', 'numpy', 'torch'} <= set(
        state)
    if ok:
        py, npy = state['python'], state['numpy']
        ok = (isinstance(py, dict) and isinstance(py.get('internal'), list)
              and all(type(v) is int for v in py['internal'])
              and isinstance(npy, dict) and npy.get('kind') == 'MT19937'
              and torch.is_tensor(npy.get('keys'))
              and torch.is_tensor(state['torch'])
              and state['torch'].dtype == torch.uint8
              and all(torch.is_tensor(t) and t.dtype == torch.uint8
                      for t in state.get('cuda', [])))
    if not ok:
        raise RandomStateError(
            f'{where} is not a random state written by '
            'decq_plugin.engine.random_state.capture; resume from a '
            'checkpoint written by ResumableCheckpointHook, or delete the '
            "checkpoint's 'random_states' entry to resume without them")


def to_cpu(state: Any) -> Any:
    """``state`` with every tensor in it copied to the CPU.

    A runner resuming on a GPU maps the whole checkpoint onto the device, so
    a saved random state arrives as CUDA tensors; numpy and
    ``torch.set_rng_state`` take CPU tensors only.
    """
    if torch.is_tensor(state):
        return state.cpu()
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(v) for v in state)
    return state


def restore(state: RandomState, where: str = 'random state') -> None:
    """Set every RNG of this process from ``state`` (from :func:`capture`),
    wherever its tensors live (a resumed checkpoint may be on a GPU).

    Raises:
        RandomStateError: ``state`` is malformed (nothing is changed).
    """
    _check(state, where)
    state = to_cpu(state)
    py, npy = state['python'], state['numpy']
    random.setstate((int(py['version']), tuple(py['internal']),
                     py['gauss_next']))
    np.random.set_state(
        ('MT19937', npy['keys'].numpy().astype(np.uint32), int(npy['pos']),
         int(npy['has_gauss']), float(npy['cached_gaussian'])))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise RandomStateError(
                f'{where} holds {len(cuda)} CUDA RNG states, this process '
                f'sees {torch.cuda.device_count()} devices; resume with the '
                'same devices visible (CUDA_VISIBLE_DEVICES)')
        torch.cuda.set_rng_state_all(cuda)


def gather() -> List[RandomState]:
    """The random states of every process, in rank order (a collective:
    call it on all ranks)."""
    from mmengine.dist import all_gather_object, get_world_size
    own = capture()
    if get_world_size() == 1:
        return [own]
    own['torch'] = own['torch'].cpu()
    own['cuda'] = [t.cpu() for t in own['cuda']]
    return all_gather_object(own)


def same_states(a: RandomState, b: RandomState) -> bool:
    """Whether two captured states are equal (for tests and checks)."""
    return (a['python'] == b['python'] and
            torch.equal(a['numpy']['keys'], b['numpy']['keys'])
            and a['numpy']['pos'] == b['numpy']['pos']
            and torch.equal(a['torch'], b['torch']))
