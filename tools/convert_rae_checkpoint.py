"""Turn RAE's released weights into a checkpoint of this package.

    python tools/convert_rae_checkpoint.py CONFIG --out FILE.pth \
        [--decoder RAE_DECODER.pt] [--stats RAE_STAT.pt] \
        [--dit RAE_DIT.pt] [--guide RAE_DIT_S.pt] [--cfg-options ...]
    python tools/convert_rae_checkpoint.py CONFIG --out DIR/tokenizer.pth \
        --diffusers HUB_FOLDER [--dit RAE_DIT.pt] ...

CONFIG gives the architecture: a stage-1 RAE config for a tokenizer
checkpoint (``--decoder``, ``--stats``), a stage-2 config for a checkpoint
of the whole generator (``--dit`` too; ``--guide`` for an autoguidance
config). The frozen VFM is loaded as the config's encoder says (timm hub, or
``--cfg-options model.tokenizer.encoder.weights_path=...``). A file that is
not in the RAE code's layout, or does not fit the config, is refused with
the keys that do not fit. ``--diffusers`` takes a diffusers AutoencoderRAE
folder (RAE's Hub weights) for VFM, decoder and statistics, and also writes
them beside ``--out`` as vfm.safetensors (timm layout),
rae_decoder.safetensors and latent_stats.pth. See
:mod:`decq_plugin.apis.convert_rae` and
:mod:`decq_plugin.apis.import_diffusers`.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis.convert_rae import convert_rae_checkpoint  # noqa: E402
from decq_plugin.apis.import_diffusers import \
    convert_diffusers_rae  # noqa: E402
from decq_plugin.models.rae_layout import RAELayoutError  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='stage-1 or stage-2 config')
    parser.add_argument('--out', required=True, help='checkpoint to write')
    parser.add_argument('--diffusers', metavar='FOLDER',
                        help="diffusers AutoencoderRAE folder (config.json "
                        '+ diffusion_pytorch_model.safetensors), e.g. '
                        'nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08')
    parser.add_argument('--decoder', help='RAE pixel decoder (model.pt)')
    parser.add_argument('--stats', help='RAE latent statistics (stat.pt)')
    parser.add_argument('--dit', help='RAE DiT-DH (stage2_model.pt)')
    parser.add_argument('--guide', help='RAE DiT-DH of the autoguidance '
                        'guide')
    parser.add_argument('--raw-weights', action='store_true',
                        help="take 'model', not 'ema', from training "
                        'checkpoints')
    parser.add_argument('--random-vfm', action='store_true',
                        help='do not load the VFM weights (tests only)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if not any((args.diffusers, args.decoder, args.stats, args.dit,
                args.guide)):
        parser.error('give at least one of --diffusers --decoder --stats '
                     '--dit --guide')
    if args.diffusers and (args.decoder or args.stats):
        parser.error('--diffusers gives the decoder and the statistics; '
                     'drop --decoder / --stats')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        if args.diffusers:
            result = convert_diffusers_rae(
                args.config, args.diffusers, args.out, dit=args.dit,
                guide=args.guide, use_ema=not args.raw_weights,
                cfg_options=args.cfg_options)
        else:
            result = convert_rae_checkpoint(
                args.config, args.out, decoder=args.decoder,
                stats=args.stats, dit=args.dit, guide=args.guide,
                pretrained_vfm=not args.random_vfm,
                use_ema=not args.raw_weights, cfg_options=args.cfg_options)
    except (RAELayoutError, FileNotFoundError) as error:
        sys.exit(f'convert_rae_checkpoint.py: error: {error}')
    filled = ', '.join(f'{k} <- {v}' for k, v in result['filled'].items())
    print(f'{args.out}: {filled}')
    for part, taken in result['weights'].items():
        print(f'  {part}: took {taken}')
    for name, path in result.get('files', {}).items():
        print(f'  wrote {name}: {path}')
    return result


if __name__ == '__main__':
    main()
