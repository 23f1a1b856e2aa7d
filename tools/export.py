"""Export a trained tokenizer or DiT-DH as a folder others can load:
``config.json`` + ``model.safetensors`` + ``SHA256SUMS`` (no MMEngine
config, no pickle).

    python tools/export.py CONFIG CHECKPOINT OUT_DIR [--part tokenizer]
        [--raw] [--vfm {include,reference}] [--cfg-options KEY=VALUE ...]

    # then, anywhere decq_plugin is installed:
    from decq_plugin.apis import load_pretrained
    tokenizer = load_pretrained(OUT_DIR)          # or the DiT-DH

The EMA weights are exported unless --raw. A tokenizer's frozen VFM is
stored too (--vfm include, default) or only named (--vfm reference: the
loader gets it from timm by name, or from load_pretrained(...,
vfm_weights=FILE)). A stage-2 config exports its DiT-DH (--part auto).
load_pretrained checks the files against SHA256SUMS and builds only classes
registered in decq_plugin, so a folder from someone else runs no code.
--format diffusers writes an RAE tokenizer as diffusers' AutoencoderRAE
(``AutoencoderRAE.from_pretrained(OUT_DIR)``; DecQ tokenizers are refused).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis import export_pretrained  # noqa: E402
from decq_plugin.utils.launch import check_file  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('config', help='the training config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('out_dir', help='the folder to write')
    parser.add_argument('--part', choices=('auto', 'tokenizer', 'denoiser'),
                        default='auto', help='what to export (auto: the '
                        'DiT-DH of a stage-2 config, else the tokenizer)')
    parser.add_argument('--raw', action='store_true',
                        help='the raw weights instead of the EMA ones')
    parser.add_argument('--vfm', choices=('include', 'reference'),
                        default='include',
                        help="store the frozen VFM's weights or only its "
                        'timm name')
    parser.add_argument('--format', choices=('decq', 'diffusers'),
                        default='decq', help="decq: this package's folder; "
                        "diffusers: an RAE tokenizer as diffusers' "
                        'AutoencoderRAE (from_pretrained(OUT_DIR))')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    try:
        check_file(args.config, 'config file')
        check_file(args.checkpoint, 'checkpoint')
    except FileNotFoundError as err:
        sys.exit(f'export.py: error: {err}')
    if args.format == 'diffusers':
        from decq_plugin.apis.diffusers_format import (DiffusersFormatError,
                                                       export_diffusers)
        if args.part == 'denoiser' or args.vfm == 'reference':
            sys.exit('export.py: error: --format diffusers writes the '
                     'tokenizer with its VFM (no --part denoiser, no --vfm '
                     'reference)')
        try:
            paths = export_diffusers(args.config, args.checkpoint,
                                     args.out_dir, use_ema=not args.raw,
                                     cfg_options=args.cfg_options)
        except DiffusersFormatError as err:
            sys.exit(f'export.py: error: {err}')
        print(f"wrote {paths['config']} and {paths['weights']}")
        return paths
    paths = export_pretrained(args.config, args.checkpoint, args.out_dir,
                              part=args.part, use_ema=not args.raw,
                              include_vfm=args.vfm == 'include',
                              cfg_options=args.cfg_options)
    print(f"wrote {paths['config']}, {paths['weights']} and "
          f"{paths['checksums']}")
    return paths


if __name__ == '__main__':
    main()
