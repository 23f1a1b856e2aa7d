# Runtime shared by every config of the project.
default_scope = 'decq_plugin'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Checkpoints load with torch.load(weights_only=True) and no allowed
    # globals (torch >= 2.6); see decq_plugin/engine/checkpoint.py.
    safe_checkpoint=dict(type='SafeCheckpointHook'),
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
randomness = dict(seed=0, deterministic=False)
