"""The Triton kernels of :mod:`decq_plugin.ops.fused`, forward and
backward, against their reference expressions, on the CPU through Triton's
interpreter (in a child process: the interpreter is chosen when the
kernels are defined). ``tests/ops/kernel_cases.py`` lists the cases."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('triton', reason='the kernels need Triton')

CASES = Path(__file__).with_name('kernel_cases.py')
ROOT = CASES.parents[2]
# Largest |fused - reference| relative to the reference's largest value:
# float32 rounding, and one to two bfloat16 steps (2**-8) for bf16 outputs.
TOLERANCE = {'fp32': 1e-5, 'bf16': 1e-2}


@pytest.fixture(scope='module')
def results():
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, str(CASES)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worst(case: dict) -> float:
    return max(err / max(ref, 1e-30) for err, ref in case.values())


def test_the_kernels_ran(results):
    assert results['kernels_ran'] is True


@pytest.mark.parametrize('case', [
    'norm_cond1', 'norm_cond37', 'add_norm_cond1', 'add_norm_cond37',
    'swiglu', 'rope', 'ditdh_decq', 'ditdh_recompute'
])
def test_kernel_equals_reference_fp32(results, case):
    # every output and every input gradient was compared
    assert len(results[case]) >= 2
    assert worst(results[case]) < TOLERANCE['fp32'], results[case]


@pytest.mark.parametrize('case', ['add_norm_bf16', 'add_norm_bf16_per_token',
                                  'swiglu_bf16', 'rope_bf16'])
def test_kernel_equals_reference_bf16(results, case):
    assert worst(results[case]) < TOLERANCE['bf16'], results[case]


def test_a_wrong_reference_is_told_apart(results):
    # 1% off in ``scale`` is far outside the float32 tolerance
    assert worst(results['control_wrong_scale']) > 100 * TOLERANCE['fp32']


def test_recompute_reruns_the_named_kernels_in_the_backward(results):
    """``recompute_fused=True`` (norms and SwiGLU): in the backward each of
    the 3 blocks runs its two norm kernels and its SwiGLU kernel again,
    next to their backward kernels; RoPE (not named) is not rerun."""
    ops = results['recompute_backward_ops']
    assert ops.get('decq_plugin.norm_modulate.default') == 6, ops
    assert ops.get('decq_plugin.swiglu.default') == 3, ops
    assert ops.get('decq_plugin.norm_modulate_backward.default') == 6, ops
    assert 'decq_plugin.rope_qkv.default' not in ops, ops
    assert ops.get('decq_plugin.rope_qkv_backward.default') == 3, ops
