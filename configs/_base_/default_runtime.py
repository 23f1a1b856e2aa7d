# Runtime shared by every config of the project.
default_scope = 'decq_plugin'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Written whole or not at all, finite only, with every random state:
    # a killed run resumes bit-identically (engine/hooks/
    # resumable_checkpoint_hook.py).
    checkpoint=dict(
        type='ResumableCheckpointHook', interval=1, max_keep_ckpts=3,
        save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Checkpoints load with torch.load(weights_only=True) and no allowed
    # globals (torch >= 2.6); see decq_plugin/engine/checkpoint.py.
    safe_checkpoint=dict(type='SafeCheckpointHook'),
    # A NaN/Inf loss or gradient skips that update; 20 in a row stop the run.
    non_finite=dict(type='NonFiniteGuardHook', max_consecutive=20),
    # Cached latents must come from the model's tokenizer (stage 2).
    latent_check=dict(type='LatentLayoutCheckHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

# More backends by name (optional packages; decq_plugin/engine/visualizer.py):
#   --cfg-options "visualizer.backends=[tensorboard,wandb]"
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='RunVisualizer', vis_backends=vis_backends, backends=[])
log_processor = dict(by_epoch=True, window_size=50)
log_level = 'INFO'
load_from = None
resume = False
# diff_rank_seed: rank r seeds with seed + r, so data-parallel ranks draw
# different noise / timesteps / dropout (DDP copies rank 0's weights; the
# samplers then take one seed broadcast from rank 0, so every rank still
# shares one data order).
randomness = dict(seed=0, diff_rank_seed=True, deterministic=False)
# Set to True to let load_from fill only the keys that fit the model.
allow_partial_load_from = False
# Set to True to --resume on another process count than the checkpoint's
# (not exact: decq_plugin/engine/process_count.py says what carries over).
allow_process_count_change = False
# Set to True to keep top-level keys that look like misspelt runner keys.
allow_unknown_keys = False
