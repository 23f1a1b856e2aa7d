"""LPIPS perceptual loss (VGG trunk by default) of the stage-1 decoder training.

Wraps the ``lpips`` package. The package's own trunk loading goes through
torchvision's deprecated ``pretrained=True`` download; here the trunk is
built randomly and its ImageNet weights are loaded by this module instead,
from a local file or the torch hub cache, always with ``weights_only=True``.
"""
import os
import warnings
from typing import Dict, Optional

import lpips
import torch
from torch import nn

from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.registry import MODELS

# Trunk name -> (torchvision weights file, its URL).
_TRUNK_WEIGHTS = {
    'vgg': ('vgg16-397923af.pth',
            'https://download.pytorch.org/models/vgg16-397923af.pth'),
    # A far cheaper trunk, used by the CPU demo.
    'alex': ('alexnet-owt-7be5be79.pth',
             'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
}
_LIN_WEIGHTS_DIR = os.path.join(os.path.dirname(lpips.__file__), 'weights',
                                'v0.1')


def _hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def _load_trunk_state(net: str,
                      path: Optional[str]) -> Dict[str, torch.Tensor]:
    """Read the torchvision state dict of the trunk (keys ``features.*``)."""
    file_name, url = _TRUNK_WEIGHTS[net]
    if path is not None:
        if not os.path.isfile(path):
            raise MissingPretrainedWeightsError(
                f'LPIPSLoss: trunk_weights_path={path!r} does not exist; it '
                f'should be torchvision\'s {file_name} ({url}).')
        from decq_plugin.engine.checkpoint import safe_load_checkpoint
        try:  # plain tensors only; the error names the file
            return safe_load_checkpoint(
                path, expected=f"torchvision's {file_name} state dict")
        except ValueError as err:
            raise MissingPretrainedWeightsError(
                f'{err} (config key: model.perceptual_loss.'
                f'trunk_weights_path); it should be torchvision\'s '
                f'{file_name} ({url}).') from None
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location='cpu', weights_only=True, check_hash=True)
    except Exception as err:
        raise MissingPretrainedWeightsError(
            f'LPIPSLoss needs the torchvision {net} trunk ImageNet '
            f'weights {file_name} and could not download them ({err}). '
            f'Download {url} and put it in {_hub_checkpoint_dir()} (the '
            f'torch hub cache; $TORCH_HOME moves it), or pass '
            f'trunk_weights_path=<path to {file_name}>. Tests use '
            f'pretrained_trunk=False.') from err


@MODELS.register_module()
class LPIPSLoss(nn.Module):
    """Mean LPIPS distance between two image batches; frozen, always eval.

    Args:
        net: LPIPS trunk: ``'vgg'`` (VGG16, the reference) or ``'alex'``.
        pretrained_trunk: load the ImageNet trunk weights (``False`` keeps
            a random trunk, for tests).
        trunk_weights_path: local torchvision ``vgg16-397923af.pth``; when
            ``None`` the torch hub cache (or a download) is used.
        lin_weights: use the calibrated linear heads shipped with ``lpips``;
            ``False`` gives the package's unweighted baseline (channel
            differences summed, layers averaged).
        channels_last: keep the trunk's convolutions in channels-last
            layout (cuDNN's native layout for bf16: no NCHW/NHWC transposes
            around each convolution). Values are unchanged.
    """

    def __init__(self,
                 net: str = 'vgg',
                 pretrained_trunk: bool = True,
                 trunk_weights_path: Optional[str] = None,
                 lin_weights: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__()
        if net not in _TRUNK_WEIGHTS:
            raise ValueError(f'net must be one of {sorted(_TRUNK_WEIGHTS)}, '
                             f'got {net!r}')
        if trunk_weights_path is not None and not pretrained_trunk:
            raise ValueError('trunk_weights_path is given but '
                             'pretrained_trunk=False')
        # Read the weights first so a missing file fails before the build.
        trunk_state = (_load_trunk_state(net, trunk_weights_path)
                       if pretrained_trunk else None)
        with warnings.catch_warnings():
            # lpips passes torchvision's deprecated ``pretrained=False``.
            warnings.simplefilter('ignore', UserWarning)
            self.lpips = lpips.LPIPS(
                net=net, lpips=lin_weights, pretrained=False,
                pnet_rand=True, verbose=False)
        if trunk_state is not None:
            self._load_trunk(trunk_state)
        if lin_weights:
            lin_state = torch.load(
                os.path.join(_LIN_WEIGHTS_DIR, f'{net}.pth'),
                map_location='cpu', weights_only=True)
            self._load_lins(lin_state)
        if channels_last:
            self.lpips.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def _load_trunk(self, state: Dict[str, torch.Tensor]) -> None:
        """Copy torchvision ``features.<i>.*`` to lpips ``slice<k>.<i>.*``."""
        trunk = self.lpips.net
        mapped = {}
        for name in trunk.state_dict():
            key = 'features.' + name.split('.', 1)[1]
            if key not in state:
                raise KeyError(f'LPIPSLoss: trunk weights lack {key!r}')
            mapped[name] = state[key]
        trunk.load_state_dict(mapped, strict=True)

    def _load_lins(self, state: Dict[str, torch.Tensor]) -> None:
        """Load the shipped heads ``lin<k>.model.1.weight`` (strictly)."""
        result = self.lpips.load_state_dict(state, strict=False)
        # ``lins.<k>`` aliases ``lin<k>``; trunk and scaling are not in it.
        missing = [k for k in result.missing_keys
                   if k.startswith('lin') and not k.startswith('lins.')]
        if missing or result.unexpected_keys:
            raise KeyError('LPIPSLoss: shipped linear heads do not match: '
                           f'missing {missing}, unexpected '
                           f'{result.unexpected_keys}')

    def train(self, mode: bool = True) -> 'LPIPSLoss':
        """Stay in eval mode whatever the parent asks."""
        return super().train(False)

    def forward(self, pred: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """LPIPS averaged over the batch.

        Args:
            pred: images ``[B, 3, H, W]`` in ``[0, 1]``.
            target: images ``[B, 3, H, W]`` in ``[0, 1]``.

        Returns:
            Scalar tensor; gradients flow to both inputs.
        """
        if pred.shape != target.shape or pred.dim() != 4 \
                or pred.shape[1] != 3:
            raise ValueError('pred and target must both be [B, 3, H, W], got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        dist = self.lpips(pred * 2 - 1, target * 2 - 1)  # [B, 1, 1, 1]
        return dist.mean()
