"""img/s per GPU of tools/train.py on 1, 2, 4, 8 ... GPUs (and simulated
nodes), launched through tools/dist_train.sh, read from the run's own log;
by default for the DecQ tokenizer and the DiT-DH-XL DecQ recipes
(``--configs`` for others).

    source tools/analysis/gpu_setup.sh && python tools/analysis/scaling.py \
        --gpus 1 2 4 8 --nodes 1 2 --out-dir "$OUT" -- --compile

``--nodes 1 2`` also runs every even count as two nodes on this host
(two dist_train.sh launches with NNODES=2, NODE_RANK=0|1, MASTER_ADDR
127.0.0.1). Arguments after ``--`` go to tools/train.py (``--compile``,
``--precision bf16`` ...). ``--dry-run`` shrinks the models and runs on the
CPU (gloo). Writes OUT/scaling_<config name>.json and .md per config
(decq_plugin/benchmark/scaling.py and scaling_setup.py say what is
measured and how).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from decq_plugin.utils.cli import doc_summary  # noqa: E402
from decq_plugin.benchmark.scaling import (measure, to_markdown,  # noqa: E402
                                           write_results)

STAGES = [
    'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
    'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-'
    '256.py'
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('--configs', nargs='+', default=STAGES,
                        help='stage-1 and/or stage-2 configs (default: the '
                        'DecQ tokenizer and DiT-DH-XL DecQ recipes)')
    parser.add_argument('--gpus', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--nodes', type=int, nargs='+', default=[1],
                        help='simulated node counts; each runs the GPU '
                        'counts it divides')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--timeout', type=int, default=600,
                        help='seconds per launch')
    parser.add_argument('--dry-run', action='store_true')
    parser.add_argument('--out-dir', default=os.environ.get('OUT') or
                        'work_dirs/scaling')
    parser.add_argument('train_args', nargs=argparse.REMAINDER,
                        help='after --: arguments of tools/train.py')
    args = parser.parse_args(argv)
    if args.train_args[:1] == ['--']:
        args.train_args = args.train_args[1:]
    for count in args.gpus + args.nodes:
        if count < 1:
            parser.error(f'--gpus and --nodes must be >= 1, got {count}')
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    command = ' '.join(['python tools/analysis/scaling.py'] + list(
        sys.argv[1:] if argv is None else argv))
    results = []
    for config in args.configs:
        stem = osp.splitext(osp.basename(config))[0]
        result = measure(config, args.gpus, osp.join(args.out_dir, stem),
                         nodes=args.nodes, iters=args.iters,
                         warmup=args.warmup, dry_run=args.dry_run,
                         train_args=args.train_args, timeout=args.timeout,
                         command=command)
        paths = write_results(result, args.out_dir, f'scaling_{stem}')
        print(to_markdown(result))
        print('written:', *paths)
        results.append(result)
    return results


if __name__ == '__main__':
    main()
