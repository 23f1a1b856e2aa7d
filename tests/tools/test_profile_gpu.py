"""tools/analysis/profile_gpu.py: kernel classes, exclusive phase times,
variant parsing and a CPU dry run of every part (tiny models, the demo
stage-1 config, its own train_step), so the one-shot GPU run cannot break
unseen."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / \
    'profile_gpu.py'
_spec = importlib.util.spec_from_file_location('decq_profile_gpu', TOOL)
prof = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = prof
_spec.loader.exec_module(prof)


@pytest.mark.parametrize('name, cls', [
    ('nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_bias_TNN', 'gemm'),
    ('cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16',
     'attention'),
    ('triton_poi_fused_cat_mul_silu_silu_backward_split_view_2',
     'fused pointwise (triton)'),
    ('triton_red_fused__fused_rms_norm__to_copy_addcmul_mul_split_sum_view_13',
     'fused reduction (triton)'),
    ('void at::native::multi_tensor_apply_kernel<FusedOptimizerTensorList',
     'optimizer'),
    ('sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc',
     'conv'),
    ('void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16>',
     'conv'),
    ('ncclDevKernel_AllReduce_Sum_bf16_RING_LL', 'communication'),
    ('some_unknown_kernel', 'other'),
])
def test_kernel_classes(name, cls):
    assert prof.kernel_class(name) == cls


def test_phase_timer_reports_exclusive_times(monkeypatch):
    """A parent's time excludes its children's (a fake clock: each wrapped
    body advances it by a known amount)."""
    now = [0.0]
    monkeypatch.setattr(prof.time, 'perf_counter', lambda: now[0])

    def advance(seconds):
        now[0] += seconds

    timer = prof.PhaseTimer('cpu')
    inner = timer.wrap('inner', lambda: advance(0.05))

    def outer_body():
        advance(0.02)
        inner()
        advance(0.03)

    outer = timer.wrap('outer', outer_body)
    outer()
    outer()
    table = timer.table(2)
    assert table['inner'] == dict(ms=50.0, calls=1)
    assert table['outer'] == dict(ms=50.0, calls=1)  # 20 + 30, not 100
    timer.enabled = False
    outer()
    assert timer.table(2)['outer']['calls'] == 1  # disabled: not counted


def test_variant_parsing():
    var = prof.parse_variant('decq:bshd+budget=0.7+ckpt=2+cdt')
    assert var['queries'] == 8 and var['bshd'] and var['ckpt'] == 2
    assert var['budget'] == 0.7
    assert var['options'] == {'coordinate_descent_tuning': True}
    assert prof.parse_variant('rae:default')['queries'] == 0
    assert prof.parse_variant('decq:fused')['fused']
    assert not prof.parse_variant('decq')['fused']
    var = prof.parse_variant('rae:fused+fp8')
    assert var['fused'] and var['fp8'] and var['queries'] == 0
    assert prof.parse_variant('decq:fused+recompute')['recompute'] is True
    assert prof.parse_variant('decq:fused+recompute=norm/swiglu')[
        'recompute'] == ('norm', 'swiglu')
    assert prof.parse_variant('decq')['recompute'] is False
    with pytest.raises(ValueError, match='mode'):
        prof.parse_variant('dit:default')
    with pytest.raises(ValueError, match='unknown option'):
        prof.parse_variant('rae:fast')


def test_dry_run_of_every_part(tmp_path):
    results = prof.main(['--dry-run', '--out-dir', str(tmp_path),
                         '--dit-variants', 'rae:default,rae:bshd+budget=0.5,'
                         'decq:default'])
    saved = json.loads((tmp_path / 'profile_gpu.json').read_text())
    assert saved['env']['gpu'] == 'cpu'
    assert 'profile_gpu.py' in saved['env']['command']
    att = results['attention']
    assert att and all(r['math']['fwd_bwd_ms'] > 0 for r in att)
    dit = {r['variant']: r for r in results['dit']}
    assert all('error' not in r for r in dit.values()), dit
    assert dit['rae:default']['kernels']['total_ms'] > 0
    assert 'kernels' not in dit['rae:bshd+budget=0.5']  # one profile a mode
    assert dit['decq:default']['cfg_forward_img_s_per_nfe'] > 0
    s1 = results['stage1']
    assert 'error' not in s1, s1
    # Every loss ran: the GAN phase's autograd.grad and both optimizers.
    for phase in ('decode (fwd)', 'LPIPS (fwd)', 'discriminator (fwd)',
                  'autograd.grad (LPIPS/disc bwd)', 'tokenizer: backward',
                  'discriminator: backward'):
        assert s1['phases'][phase]['ms'] > 0, phase
    assert s1['phases']['autograd.grad (LPIPS/disc bwd)']['calls'] == 4
    assert 'loss_gan' in s1['log_keys']
    assert [r['added'] for r in s1['more_regions']] == [
        'perceptual_loss.lpips', 'discriminator.heads']
    assert all(r['img_s'] > 0 for r in s1['more_regions'])
    table = (tmp_path / 'profile_gpu.md').read_text()
    assert 'Stage-1 train_step' in table and 'rae:bshd' in table
