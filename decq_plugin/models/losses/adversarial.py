"""Adversarial terms of the stage-1 loss.

Hinge loss for the discriminator, the matching generator loss, the adaptive
weight that balances the GAN gradient against the reconstruction gradient on
the decoder's last layer, and the epoch schedule that switches both on.
"""
import torch
import torch.nn.functional as F

from decq_plugin.registry import MODELS


def hinge_d_loss(logits_real: torch.Tensor,
                 logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator.

    ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``, the VQGAN / RAE
    convention (the 0.5 averages the real and fake halves).

    Args:
        logits_real: logits of real images, any shape (e.g. ``[B, N]``).
        logits_fake: logits of generated images, any shape.

    Returns:
        Scalar loss.
    """
    loss_real = F.relu(1.0 - logits_real).mean()
    loss_fake = F.relu(1.0 + logits_fake).mean()
    return 0.5 * (loss_real + loss_fake)


def generator_hinge_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss paired with the hinge discriminator: ``-mean(fake)``.

    Args:
        logits_fake: logits of generated images, any shape.

    Returns:
        Scalar loss.
    """
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor,
                    gan_loss: torch.Tensor,
                    last_layer: torch.Tensor,
                    max_weight: float = 1e4,
                    eps: float = 1e-6) -> torch.Tensor:
    """Weight that gives the GAN gradient the reconstruction gradient's size.

    ``lambda = ||d rec / d W|| / (||d gan / d W|| + eps)``, clamped to
    ``[0, max_weight]`` and detached, where ``W`` is ``last_layer`` (the
    decoder's last weight). Both graphs are kept (``retain_graph=True``) so
    the caller can still back-propagate ``rec + w * lambda * gan``.

    Args:
        rec_loss: scalar reconstruction loss (e.g. L1 + LPIPS).
        gan_loss: scalar generator GAN loss.
        last_layer: the parameter both gradients are taken on.
        max_weight: upper clamp.
        eps: added to the GAN gradient norm.

    Returns:
        Scalar tensor without grad.
    """
    if max_weight < 0:
        raise ValueError(f'max_weight must be >= 0, got {max_weight}')
    if eps <= 0:
        raise ValueError(f'eps must be > 0, got {eps}')
    grads = []
    for name, loss in (('rec_loss', rec_loss), ('gan_loss', gan_loss)):
        grad, = torch.autograd.grad(
            loss, last_layer, retain_graph=True, allow_unused=True)
        if grad is None:
            raise ValueError(f'{name} does not depend on last_layer')
        grads.append(grad)
    weight = grads[0].norm() / (grads[1].norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


@MODELS.register_module()
class GANLossSchedule:
    """When the GAN terms are on (epochs are 0-indexed, as MMEngine counts).

    Args:
        disc_start_epoch: first epoch in which the discriminator is updated.
        gan_start_epoch: first epoch in which the generator gets the GAN term.
    """

    def __init__(self, disc_start_epoch: int = 6,
                 gan_start_epoch: int = 8) -> None:
        for name, value in (('disc_start_epoch', disc_start_epoch),
                            ('gan_start_epoch', gan_start_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 0:
                raise ValueError(
                    f'{name} must be an int >= 0, got {value!r}')
        self.disc_start_epoch = disc_start_epoch
        self.gan_start_epoch = gan_start_epoch

    def disc_active(self, epoch: int) -> bool:
        """Whether the discriminator is trained in ``epoch``."""
        return epoch >= self.disc_start_epoch

    def gan_active(self, epoch: int) -> bool:
        """Whether the generator loss includes the GAN term in ``epoch``."""
        return epoch >= self.gan_start_epoch

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(disc_start_epoch='
                f'{self.disc_start_epoch}, gan_start_epoch='
                f'{self.gan_start_epoch})')
