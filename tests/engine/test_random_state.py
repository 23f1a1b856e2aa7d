"""Random states round-trip through a weights-only checkpoint."""
import io
import random

import numpy as np
import pytest
import torch

from decq_plugin.engine import random_state


def _draw():
    return (random.random(), float(np.random.rand()), torch.rand(4))


def test_capture_restore_through_a_plain_checkpoint():
    state = random_state.capture()
    first = _draw()
    buffer = io.BytesIO()
    torch.save({'random_states': [state]}, buffer)
    buffer.seek(0)
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        loaded = torch.load(buffer, weights_only=True)['random_states'][0]
    finally:
        torch.serialization.add_safe_globals(allowed)
    _draw()
    random_state.restore(loaded)
    second = _draw()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_malformed_state_is_refused_untouched():
    before = random_state.capture()
    with pytest.raises(random_state.RandomStateError, match='resume'):
        random_state.restore({'python': 'x', 'numpy': {}, 'torch': 1},
                             "checkpoint['random_states']")
    assert random_state.same_states(before, random_state.capture())
