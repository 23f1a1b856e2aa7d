"""Adversarial terms of the stage-1 loss.

Hinge loss for the discriminator, the matching generator loss, the adaptive
weight that balances the GAN gradient against the reconstruction gradient on
the decoder's last layer. When the terms switch on is decided by
:class:`~decq_plugin.models.autoencoder_model.AutoencoderModel`.
"""
import torch
import torch.nn.functional as F


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


ADAPTIVE_BATCHES = ('local', 'global')


def average_over_processes(grad: torch.Tensor) -> torch.Tensor:
    """The mean of ``grad`` over all processes (itself when not
    distributed): the gradient of the mean loss over the global batch."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or \
            dist.get_world_size() == 1:
        return grad
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def adaptive_weight(rec_loss: torch.Tensor,
                    gan_loss: torch.Tensor,
                    last_layer: torch.Tensor,
                    max_weight: float = 1e4,
                    eps: float = 1e-6,
                    batch: str = 'local') -> torch.Tensor:
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
        batch: ``'local'`` (the reference recipe): the norms of this
            process's gradients, so each process computes its own weight
            from its share of the batch; ``'global'``: both gradients are
            first averaged over all processes (an all-reduce each), so N
            processes get the weight one process would get on the whole
            batch.

    Returns:
        Scalar tensor without grad.
    """
    if max_weight < 0:
        raise ValueError(f'max_weight must be >= 0, got {max_weight}')
    if eps <= 0:
        raise ValueError(f'eps must be > 0, got {eps}')
    if batch not in ADAPTIVE_BATCHES:
        raise ValueError(f'batch must be one of {ADAPTIVE_BATCHES}, got '
                         f'{batch!r}')
    grads = []
    for name, loss in (('rec_loss', rec_loss), ('gan_loss', gan_loss)):
        grad, = torch.autograd.grad(
            loss, last_layer, retain_graph=True, allow_unused=True)
        if grad is None:
            raise ValueError(f'{name} does not depend on last_layer')
        grads.append(grad if batch == 'local' else
                     average_over_processes(grad))
    weight = grads[0].norm() / (grads[1].norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
