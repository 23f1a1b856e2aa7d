"""SIGKILL at chosen and at random moments, then ``--resume`` until done:
the final checkpoint (weights, EMA, optimizer state) must be bit-identical
to an uninterrupted run's, for both stages, on the CPU."""
import os
import random

import pytest

import fault_driver as D

pytestmark = pytest.mark.slow
LOG = os.environ.get('DECQ_FAULT_LOG', '')


def _argv(config, options, work):
    return [config, '--work-dir', work, '--cfg-options', *options]


def _chain(config, options, work, kills, log):
    """Kill a run at each point in turn (each run resumes the last), then
    resume until it finishes; return the exit codes (run ``i`` logs to
    ``log.i``)."""
    codes = []
    for i, kill in enumerate(kills):
        argv = _argv(config, options, work) + (['--resume'] if i else [])
        codes.append(D.run_train(argv, kill, log=f'{log}.{i}'))
    codes.append(D.resume_until_done(_argv(config, options, work),
                                     log=f'{log}.{len(kills)}'))
    return codes


def _failed_logs(codes, log) -> str:
    """The log tails of the runs that neither died (-9) nor finished."""
    return '\n'.join(f'--- run {i} (exit {c}):\n' +
                     open(f'{log}.{i}').read()[-3000:]
                     for i, c in enumerate(codes) if c not in (0, -9))


@pytest.mark.parametrize('stage', ['stage1', 'stage2'])
def test_killed_runs_resume_bit_identically(stage, tmp_path):
    if stage == 'stage1':
        config, options = D.STAGE1_CONFIG, D.STAGE1_OPTIONS
        kills = [('checkpoint_write', 1), ('iter', 3), ('last_checkpoint', 1),
                 ('before_delete', 1)]
    else:
        latents = D.write_latent_folder(str(tmp_path / 'latents'))
        config, options = D.STAGE2_CONFIG, D.stage2_options(latents)
        seconds = random.Random(os.getpid()).uniform(4.0, 12.0)
        # The kill at a random moment comes last: earlier, on a fast machine,
        # it could land after a later kill point and leave it unreached.
        kills = [('before_publish', 1), ('checkpoint_write', 2),
                 ('after', seconds)]
    log = str(tmp_path / 'runs.log')
    ref = str(tmp_path / 'ref')
    assert D.run_train(_argv(config, options, ref), log=log) == 0
    work = str(tmp_path / 'killed')
    codes = _chain(config, options, work, kills, log)
    assert codes[-1] == 0, (codes, _failed_logs(codes, log))
    killed = sum(c == -9 for c in codes[:-1])
    diff = D.differing(D.final_state(ref, 3), D.final_state(work, 3))
    D.record(LOG, dict(suite='kill', stage=stage, kills=kills,
                       killed=killed, differing=len(diff)))
    assert diff == [], diff[:10]
    # Each deterministic kill point was reached (the run really died there).
    deterministic = [c for c, k in zip(codes, kills) if k[0] != 'after']
    assert deterministic == [-9] * len(deterministic), (
        codes, _failed_logs(codes, log))


def test_kill_before_last_checkpoint_is_updated(tmp_path):
    """Killed after epoch_2.pth was renamed into place, before
    ``last_checkpoint`` (still naming epoch_1.pth) was replaced: the resume
    starts from epoch 2 (no epoch lost), and removes the stale
    ``last_checkpoint.tmp<PID>`` and epoch_1.pth (max_keep_ckpts=1)."""
    latents = D.write_latent_folder(str(tmp_path / 'latents'))
    options = D.stage2_options(latents)
    log = str(tmp_path / 'runs.log')
    ref = str(tmp_path / 'ref')
    assert D.run_train(_argv(D.STAGE2_CONFIG, options, ref), log=log) == 0
    work = str(tmp_path / 'killed')
    codes = _chain(D.STAGE2_CONFIG, options, work, [('last_checkpoint', 2)],
                   log)
    assert codes == [-9, 0], (codes, _failed_logs(codes, log))
    assert 'resumed epoch: 2' in open(f'{log}.1').read()
    left = sorted(n for n in os.listdir(work) if n.endswith('.pth') or
                  n.startswith('last_checkpoint'))
    assert left == ['epoch_3.pth', 'last_checkpoint'], left
    diff = D.differing(D.final_state(ref, 3), D.final_state(work, 3))
    D.record(LOG, dict(suite='kill', stage='stage2',
                       kills=[('last_checkpoint', 2)], killed=1,
                       differing=len(diff)))
    assert diff == [], diff[:10]


def test_persistent_workers_resume_bit_identically(tmp_path):
    """Data loader workers that persist across epochs draw their seed from
    the global RNG only when first iterated: in the uninterrupted run at
    epoch 1, in a resumed one at its first epoch."""
    latents = D.write_latent_folder(str(tmp_path / 'latents'))
    options = D.stage2_options(latents) + [
        'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=True']
    log = str(tmp_path / 'runs.log')
    ref = str(tmp_path / 'ref')
    assert D.run_train(_argv(D.STAGE2_CONFIG, options, ref), log=log) == 0
    work = str(tmp_path / 'killed')
    codes = _chain(D.STAGE2_CONFIG, options, work, [('iter', 5)], log)
    assert codes == [-9, 0], (codes, _failed_logs(codes, log))
    diff = D.differing(D.final_state(ref, 3), D.final_state(work, 3))
    D.record(LOG, dict(suite='kill', stage='stage2 persistent workers',
                       kills=[('iter', 5)], killed=1, differing=len(diff)))
    assert diff == [], diff[:10]
