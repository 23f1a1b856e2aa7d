"""Checks of the GPU acceptance run (``tools/analysis/gpu_smoke.py``) on
what the tools left on disk, each printing one JSON line.

    python -m decq_plugin.testing.acceptance_checks checkpoint FILE
    python -m decq_plugin.testing.acceptance_checks export CONFIG CKPT DIR
    python -m decq_plugin.testing.acceptance_checks rae-files CONFIG OUT_DIR

* ``checkpoint``: epoch/iteration, EMA swapped in (``state_dict`` holds the
  averaged weights, ``ema_state_dict`` the raw ones), the skipped non-finite
  updates, random states saved, every tensor finite.
* ``export``: the folder of ``tools/export.py`` loaded with
  ``load_pretrained`` on the device computes what the checkpoint computes
  (tokenizer: encode and decode; DiT-DH: one velocity prediction).
* ``rae-files``: the config's decoder or DiT-DH (random weights) written in
  the public RAE code's layout, for ``tools/convert_rae_checkpoint.py``
  to read back (``reference.pt`` holds the source weights).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import torch


def _device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def inspect_checkpoint(path: str) -> Dict:
    """What a training checkpoint holds (see the module)."""
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    ckpt = safe_load_checkpoint(path)
    state, raw = ckpt.get('state_dict', {}), ckpt.get('ema_state_dict', {})
    averaged = [k for k in raw if k.startswith('module.')
                and k[len('module.'):] in state]
    swapped = any(not torch.equal(state[k[len('module.'):]], raw[k])
                  for k in averaged)
    info = ckpt.get('message_hub', {}).get('runtime_info', {})
    tensors = [v for part in ('state_dict', 'ema_state_dict')
               for v in ckpt.get(part, {}).values() if torch.is_tensor(v)]
    meta = ckpt.get('meta', {})
    return dict(
        file=osp.basename(path), epoch=meta.get('epoch'),
        iter=meta.get('iter'), tensors=len(state),
        ema_entries=len(averaged), ema_swapped=bool(swapped),
        nonfinite_skips=info.get('nonfinite_skips'),
        random_states=len(ckpt.get('random_states') or []),
        all_finite=all(bool(torch.isfinite(t.float()).all())
                       for t in tensors if t.is_floating_point()),
        has_optimizer='optimizer' in ckpt)


def _max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@torch.no_grad()
def check_export(config: str, checkpoint: str, folder: str) -> Dict:
    """``load_pretrained(folder)`` against the checkpoint's own model."""
    from decq_plugin.apis import (build_model_from_config,
                                  build_tokenizer_from_config,
                                  load_pretrained)
    device = _device()
    loaded = load_pretrained(folder, device=device)
    g = torch.Generator(device='cpu').manual_seed(0)
    if hasattr(loaded, 'encode'):
        ref = build_tokenizer_from_config(
            config, checkpoint, device=device,
            cfg_options={'model.tokenizer.latent_stats': None})
        size = ref.image_size
        images = torch.rand(2, 3, size, size, generator=g).to(device)
        lat_ref = ref.encode(images, normalize=False)
        lat_new = loaded.encode(images, normalize=False)
        out = dict(kind='tokenizer', latent_max_diff=_max_diff(lat_ref,
                                                               lat_new),
                   pixel_max_diff=float(
                       (ref.decode(lat_ref, normalized=False) -
                        loaded.decode(lat_ref, normalized=False)).abs().max()))
    else:
        model = build_model_from_config(
            config, checkpoint, device=device,
            cfg_options={'model.tokenizer_ckpt': None})
        ref = model.denoiser
        shapes = model.tokenizer.latent_shapes
        x = {k: torch.randn(2, *s, generator=g).to(device)
             for k, s in shapes.items()}
        t = torch.tensor([0.3, 0.8], device=device)
        y = torch.tensor([1, 2], device=device)
        out = dict(kind='denoiser',
                   velocity_max_diff=_max_diff(ref(x, t, y), loaded(x, t, y)))
    out['equal'] = all(v == 0.0 for k, v in out.items()
                       if k.endswith('_max_diff'))
    return out


def write_rae_files(config: str, out_dir: str) -> Dict:
    """The config's decoder (stage 1) or DiT-DH (stage 2), randomly
    initialised, in RAE's layout: ``rae_decoder.pt`` / ``rae_dit.pt``."""
    from decq_plugin.models.rae_layout import decoder_to_rae, ditdh_to_rae
    from decq_plugin.apis.build import _load_config
    from decq_plugin.registry import MODELS
    cfg = _load_config(config)
    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    if 'denoiser' in cfg.model:
        cfg.model.update(tokenizer_ckpt=None)
        cfg.model.tokenizer.update(latent_stats=None)
        cfg.model.tokenizer.encoder.pretrained = False
        module, name = MODELS.build(cfg.model).denoiser, 'rae_dit.pt'
    else:
        tok = cfg.model.tokenizer
        tok.encoder.pretrained = False
        tok.latent_stats = None
        module, name = MODELS.build(tok).decoder, 'rae_decoder.pt'
    with torch.no_grad():  # not the zero-initialised output layers
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = (ditdh_to_rae(module) if name == 'rae_dit.pt'
             else decoder_to_rae(module))
    torch.save(state, osp.join(out_dir, name))
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()},
               osp.join(out_dir, 'reference.pt'))
    return dict(file=name, tensors=len(state))


def check_rae_conversion(converted: str, reference: str) -> Dict:
    """The converted checkpoint holds the reference weights exactly."""
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    state = safe_load_checkpoint(converted)['state_dict']
    ref = torch.load(reference, map_location='cpu', weights_only=True)
    for prefix in ('denoiser.', 'tokenizer.decoder.'):
        found = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
        if set(ref) <= set(found):
            break
    missing = sorted(set(ref) - set(found))
    diff = max((float((found[k].float() - v.float()).abs().max())
                for k, v in ref.items() if k in found), default=None)
    return dict(missing=missing[:5], max_diff=diff,
                equal=not missing and diff == 0.0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='what', required=True)
    p = sub.add_parser('checkpoint')
    p.add_argument('file')
    p = sub.add_parser('export')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('folder')
    p = sub.add_parser('rae-files')
    p.add_argument('config')
    p.add_argument('out_dir')
    p = sub.add_parser('rae-converted')
    p.add_argument('converted')
    p.add_argument('reference')
    args = parser.parse_args(argv)
    from mmengine.registry import init_default_scope
    init_default_scope('decq_plugin')
    if args.what == 'checkpoint':
        out = inspect_checkpoint(args.file)
    elif args.what == 'export':
        out = check_export(args.config, args.checkpoint, args.folder)
    elif args.what == 'rae-files':
        out = write_rae_files(args.config, args.out_dir)
    else:
        out = check_rae_conversion(args.converted, args.reference)
    print('ACCEPTANCE ' + json.dumps(out, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
