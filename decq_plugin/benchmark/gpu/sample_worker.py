"""Sampling throughput in a process of its own (fresh GPU memory, its own
compilation), started by :func:`.tool_runs.run_sample_tool`:

    python -m decq_plugin.benchmark.gpu.sample_worker '{"work": ..., ...}'

A random-weight checkpoint of the config, then what ``tools/sample.py``
does (:func:`decq_plugin.apis.load_sampling_model` and
:func:`decq_plugin.apis.sample_to_npz`, PNGs only) twice: once to compile,
once timed. Prints ``WORKER_RESULT {json}``.
"""
import json
import os.path as osp
import sys
from typing import List, Optional

import torch

from .plan import ROOT, init_scope
from .timing import peak_gib
from .tool_runs import RESULT_PREFIX, override_config


def sample_worker(opts: dict) -> dict:
    """``opts``: ``work`` folder, ``config`` (relative to the repository),
    ``batch``, ``num`` samples timed, ``compile`` (the sampler's regions),
    optional ``compile_cfg`` (``model.compile``), ``device``,
    ``num_steps``, ``guidance_scale``, ``guidance_interval``."""
    init_scope()
    from decq_plugin.apis import load_sampling_model, sample_to_npz
    from decq_plugin.registry import MODELS
    from decq_plugin.utils.launch import load_config
    work, config = opts['work'], osp.join(ROOT, opts['config'])
    cfg = load_config(config)
    if opts.get('compile_cfg'):
        config = override_config(
            osp.join(work, 'sample_cfg.py'), opts['config'],
            f"model = dict(compile={opts['compile_cfg']!r})\n")
    ckpt = osp.join(work, 'random.pth')
    torch.manual_seed(0)
    with torch.device('cuda' if torch.cuda.is_available() and
                      opts.get('device') is None else 'cpu'):
        model = MODELS.build(cfg.model)  # random weights, fast init on GPU
    state = {k: v.to('cpu', torch.bfloat16) if v.is_floating_point()
             else v.cpu() for k, v in model.state_dict().items()}
    torch.save({'state_dict': state}, ckpt)
    del model, state
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    device = opts.get('device') or ('cuda' if torch.cuda.is_available()
                                    else 'cpu')

    def run(out_dir: str, num: int) -> dict:
        model = load_sampling_model(
            config, ckpt, num_steps=opts.get('num_steps'),
            guidance_scale=opts.get('guidance_scale'),
            guidance_interval=opts.get('guidance_interval'), device=device)
        return sample_to_npz(model, osp.join(work, out_dir), classes=[0],
                             num_per_class=num, batch_size=opts['batch'],
                             write_npz=False, compile=opts.get('compile'),
                             device=device)

    warm = run('s_warm', opts['batch'])
    timed = run('s_timed', opts['num'])
    return dict(images=timed['num_samples'],
                seconds=round(timed['seconds'], 2),
                img_s=round(timed['num_samples'] / timed['seconds'], 2),
                warmup_seconds=round(warm['seconds'], 1),
                precision=timed['precision'], config=opts['config'],
                peak_gib=peak_gib('cuda' if torch.cuda.is_available()
                                  else 'cpu'))


def main(argv: Optional[List[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    result = sample_worker(json.loads(argv[0]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == '__main__':
    main()
