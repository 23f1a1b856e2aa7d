"""Print a config with its ``_base_`` files merged and any overrides
applied, as MMEngine sees it.

    python tools/misc/print_config.py CONFIG [--cfg-options KEY=VALUE ...]
        [--out merged.py]
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from decq_plugin.utils.launch import load_config  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='config file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries (key=value)')
    parser.add_argument('--out', help='also write the merged config here')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'print_config.py: error: {err}')
    text = cfg.pretty_text
    print(f'Config: {args.config}\n{text}')
    if args.out:
        cfg.dump(args.out)
    return text


if __name__ == '__main__':
    main()
