"""Exit 1 with one line when torch and torchvision cannot be imported
together (builds from different indexes, e.g. a CPU torch with a torchvision
built for CUDA torch); tools/demo.sh and tools/test.sh run it right after
installing.

    python tools/misc/check_torch_build.py
"""
import sys


def main() -> int:
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - report any import failure
        print(f'== torch cannot be imported: {type(error).__name__}: {error}'
              '\n== install it first, e.g. pip install torch torchvision '
              '--index-url https://download.pytorch.org/whl/cpu',
              file=sys.stderr)
        return 1
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # noqa: BLE001
        reason = str(error).strip().splitlines()[-1:] or ['']
        print(f'== torch {torch.__version__} and the installed torchvision '
              f'do not work together ({type(error).__name__}: {reason[0]}): '
              'they come from different builds. Reinstall both from the same '
              'index, e.g. pip install --force-reinstall torch torchvision '
              '--index-url https://download.pytorch.org/whl/cpu (CPU) or '
              'without --index-url (CUDA).', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
