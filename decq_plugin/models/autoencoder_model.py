"""Stage 1: train a tokenizer's decoder (and condensers) as an autoencoder.

Loss of the tokenizer: ``L1 + w_p * LPIPS + w_g * lambda * GAN (+ the
tokenizer's auxiliary losses)`` where ``lambda`` is the adaptive weight on the
decoder's last layer. The discriminator is trained with the hinge loss on
DiffAug-ed real and reconstructed images. Two optimizers come from an
MMEngine ``OptimWrapperDict`` with keys ``'tokenizer'`` and
``'discriminator'`` (see ``configs/_base_/schedules``); with a single optim
wrapper the GAN is off and only the reconstruction losses are used.
"""
from typing import Dict, List, Optional, Union

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

from decq_plugin.registry import MODELS
from .compile_regions import compile_regions
from .losses.adversarial import (ADAPTIVE_BATCHES, adaptive_weight,
                                 average_over_processes,
                                 generator_hinge_loss, hinge_d_loss)
from .state_dict_keys import use_wrapper_free_keys


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a (distributed) model wrapper."""
    return module.module if is_model_wrapper(module) else module


def _loss_scale(wrapper: OptimWrapper) -> float:
    """The current loss scale of an fp16 ``AmpOptimWrapper``, else 1."""
    scaler = getattr(wrapper, 'loss_scaler', None)
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


@MODELS.register_module()
class AutoencoderModel(BaseModel):
    """Trains a tokenizer with reconstruction + perceptual + GAN losses.

    Args:
        tokenizer: config of a tokenizer (``DecQTokenizer``, ...).
        perceptual_loss: config of the perceptual loss (``LPIPSLoss``) or
            None.
        discriminator: config of the discriminator (``DINODiscriminator``)
            or None for no GAN.
        diffaug: config of the differentiable augmentation applied to real
            and fake images before the discriminator, or None.
        l1_weight, perceptual_weight, gan_weight: loss weights.
        disc_start, gan_start: when the discriminator starts updating and
            when the generator's GAN term starts, in ``schedule_unit``s.
        schedule_unit: ``'epoch'`` or ``'iter'``.
        adaptive_weight_max: clamp of the adaptive GAN weight.
        compile: ``torch.compile`` of the heavy regions (see
            :mod:`decq_plugin.models.compile_regions`): False (eager), True
            (the decoder blocks and the discriminator's feature-network
            blocks) or a dict with ``regions`` and ``torch.compile``
            arguments.
        adaptive_weight_batch: ``'local'`` (default, as the reference
            recipe computes it): each process takes the gradient norms of
            its own share of the batch, so the weight depends on the number
            of processes; ``'global'``: the gradients are averaged over all
            processes first, so N processes get the weight of one process
            on the whole batch.
    """

    #: Regions compiled by ``compile=True``: the decoder and discriminator
    #: blocks, the discriminator heads and the LPIPS network (eager, the
    #: LPIPS feature normalisation and the heads' norms run as many small
    #: float32 kernels; compiled, the stage-1 step on an H200 ran 223 ->
    #: 283 img/s, docs/benchmarks/h200_profile_2026-11-30b.json).
    default_compile_regions = ('tokenizer.decoder.blocks',
                               'discriminator.feature_net.blocks',
                               'discriminator.heads',
                               'perceptual_loss.lpips')

    def __init__(self,
                 tokenizer: dict,
                 perceptual_loss: Optional[dict] = dict(type='LPIPSLoss'),
                 discriminator: Optional[dict] = None,
                 diffaug: Optional[dict] = dict(type='DiffAug'),
                 l1_weight: float = 1.0,
                 perceptual_weight: float = 1.0,
                 gan_weight: float = 0.75,
                 disc_start: int = 6,
                 gan_start: int = 8,
                 schedule_unit: str = 'epoch',
                 adaptive_weight_max: float = 1e4,
                 compile: Union[bool, dict, None] = False,
                 adaptive_weight_batch: str = 'local',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if schedule_unit not in ('epoch', 'iter'):
            raise ValueError(f"schedule_unit='{schedule_unit}' must be "
                             "'epoch' or 'iter'")
        if gan_start < disc_start:
            raise ValueError(f'gan_start={gan_start} must not come before '
                             f'disc_start={disc_start}')
        # Same checkpoint keys on one GPU and under MMSeparateDDP.
        use_wrapper_free_keys(self)
        self.tokenizer = MODELS.build(tokenizer)
        self.perceptual_loss = (MODELS.build(perceptual_loss)
                                if perceptual_loss else None)
        self.discriminator = (MODELS.build(discriminator)
                              if discriminator else None)
        self.diffaug = MODELS.build(diffaug) if diffaug else nn.Identity()
        self.l1_weight = l1_weight
        self.perceptual_weight = perceptual_weight
        self.gan_weight = gan_weight
        self.disc_start = disc_start
        self.gan_start = gan_start
        self.schedule_unit = schedule_unit
        self.adaptive_weight_max = adaptive_weight_max
        self.compiled_regions = compile_regions(
            self, compile, self.default_compile_regions)
        if adaptive_weight_batch not in ADAPTIVE_BATCHES:
            raise ValueError(
                f'adaptive_weight_batch={adaptive_weight_batch!r} must be '
                f'one of {ADAPTIVE_BATCHES}')
        self.adaptive_weight_batch = adaptive_weight_batch

    # -- schedule ------------------------------------------------------------
    def _progress(self) -> int:
        hub = MessageHub.get_current_instance()
        return int(hub.get_info(self.schedule_unit, 0) or 0)

    def gan_phase(self) -> Dict[str, bool]:
        """Whether the discriminator / the generator's GAN term are on."""
        if self.discriminator is None:
            return dict(disc=False, gan=False)
        step = self._progress()
        return dict(disc=step >= self.disc_start, gan=step >= self.gan_start)

    # -- losses --------------------------------------------------------------
    def reconstruction_losses(
            self, recon: torch.Tensor,
            images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """L1 and perceptual terms (weighted)."""
        losses = {'loss_l1': self.l1_weight * (recon - images).abs().mean()}
        if self.perceptual_loss is not None:
            losses['loss_perceptual'] = self.perceptual_weight * \
                self.perceptual_loss(recon, images)
        return losses

    def _frozen_disc_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits for the generator's GAN term: the module
        itself (not its DDP wrapper: no gradient of its own is wanted
        here), in eval mode (no spectral-norm power iteration)."""
        disc = unwrap(self.discriminator)
        was_training = disc.training
        disc.eval()
        try:
            return disc(self.diffaug(images))
        finally:
            disc.train(was_training)

    def generator_losses(self, images: torch.Tensor,
                         use_gan: bool) -> tuple:
        """Tokenizer losses of one step and the (detached) reconstruction.

        With ``use_gan`` the GAN term is weighted by the adaptive weight of
        the decoder's last layer (:func:`adaptive_weight`)."""
        losses, recon, extra = self._generator_pass(images, use_gan)
        if use_gan:
            rec, g_loss = extra
            weight = adaptive_weight(rec, g_loss,
                                     unwrap(self.tokenizer).last_layer,
                                     self.adaptive_weight_max,
                                     batch=self.adaptive_weight_batch)
            losses['loss_gan'] = self.gan_weight * weight * g_loss
            losses['gan_adaptive_weight'] = weight
        return losses, recon.detach()

    def _generator_pass(self, images: torch.Tensor, use_gan: bool) -> tuple:
        """(losses without the GAN term, recon with its graph, (rec, gan)
        scalars or None)."""
        out = self.tokenizer(images)
        recon = out.pop('recon')
        losses = dict(out)
        losses.update(self.reconstruction_losses(recon, images))
        if not use_gan:
            return losses, recon, None
        rec = losses['loss_l1'] + losses.get('loss_perceptual', 0.0)
        g_loss = generator_hinge_loss(self._frozen_disc_logits(recon))
        return losses, recon, (rec, g_loss)

    def generator_gan_step(self, images: torch.Tensor,
                           loss_scale: float = 1.0) -> tuple:
        """The GAN-phase generator losses and a loss to back-propagate that
        has the gradient of their sum, with each frozen network (LPIPS
        trunk, discriminator trunk) back-propagated once.

        ``L = rec + w * lambda * gan + aux`` reaches the decoder only through
        the reconstruction ``x``, and ``lambda`` needs ``d rec / dW`` and
        ``d gan / dW`` on the decoder's last layer ``W``. So ``g_r = d rec /
        dx`` and ``g_g = d gan / dx`` are taken once each, ``lambda`` comes
        from their pull-back to ``W`` (which only crosses the last layer),
        and ``<x, g_r + w lambda g_g> + aux`` (gradients fixed) has the
        gradient of ``L``. Computing ``lambda`` on the full graphs, as
        :func:`adaptive_weight` does, runs both trunks' backward twice. With
        ``adaptive_weight_batch='global'`` both pull-backs are averaged
        over the processes first, so every process uses the weight of the
        whole batch.

        Args:
            images: [B, 3, H, W] in [0, 1].
            loss_scale: the optim wrapper's loss scale (fp16) so the
                gradients through the trunks do not underflow; divided out.

        Returns:
            ``(losses, recon (detached), backward_loss)``; ``losses`` are
            those of :meth:`generator_losses` (same values).
        """
        losses, recon, (rec, g_loss) = self._generator_pass(images, True)
        g_rec, = torch.autograd.grad(rec * loss_scale, recon,
                                     retain_graph=False)
        g_gan, = torch.autograd.grad(g_loss * loss_scale, recon,
                                     retain_graph=False)
        last = unwrap(self.tokenizer).last_layer
        w_rec, = torch.autograd.grad(recon, last, g_rec, retain_graph=True)
        w_gan, = torch.autograd.grad(recon, last, g_gan, retain_graph=True)
        if self.adaptive_weight_batch == 'global':
            # The gradients of the global batch's mean loss (one all-reduce
            # each), as adaptive_weight(batch='global') takes them.
            w_rec = average_over_processes(w_rec)
            w_gan = average_over_processes(w_gan)
        # The scale cancels in the ratio, not in eps (as adaptive_weight).
        weight = (w_rec.norm() / loss_scale) / (
            w_gan.norm() / loss_scale + 1e-6)
        weight = weight.clamp(0.0, self.adaptive_weight_max).detach()
        losses['loss_gan'] = self.gan_weight * weight * g_loss.detach()
        losses['gan_adaptive_weight'] = weight
        grad = (g_rec.float() + (self.gan_weight * weight) *
                g_gan.float()) / loss_scale
        backward_loss = (recon.float() * grad).sum()
        others = [v for k, v in losses.items() if 'loss' in k and k not in (
            'loss_l1', 'loss_perceptual', 'loss_gan') and v.requires_grad]
        for value in others:
            backward_loss = backward_loss + value
        return losses, recon.detach(), backward_loss

    def discriminator_loss(self, images: torch.Tensor,
                           recon: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Hinge loss on real and reconstructed images (one forward); the
        reconstructions are quantised to 8 bits like real images."""
        fake = recon.clamp(0, 1).mul(255).round().div(255)
        both = self.diffaug(torch.cat([images, fake], dim=0))
        logits = self.discriminator(both)
        real, fake = logits.chunk(2, dim=0)
        return {'loss_disc': hinge_d_loss(real, fake),
                'disc_logits_real': real.detach().mean(),
                'disc_logits_fake': fake.detach().mean()}

    # -- MMEngine entry points -------------------------------------------------
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: Union[OptimWrapper, OptimWrapperDict]
                   ) -> Dict[str, torch.Tensor]:
        data = self.data_preprocessor(data, True)
        images = data['inputs']
        if isinstance(optim_wrapper, OptimWrapperDict):
            gen_wrapper = optim_wrapper['tokenizer']
            disc_wrapper = (optim_wrapper['discriminator']
                            if 'discriminator' in optim_wrapper.keys()
                            else None)
        else:
            gen_wrapper, disc_wrapper = optim_wrapper, None
        phase = self.gan_phase()
        if disc_wrapper is None:
            phase = dict(disc=False, gan=False)

        with gen_wrapper.optim_context(self.tokenizer):
            if phase['gan']:
                losses, recon, total = self.generator_gan_step(
                    images, _loss_scale(gen_wrapper))
                log_vars = self.parse_losses(losses)[1]
            else:
                losses, recon = self.generator_losses(images, False)
                total, log_vars = self.parse_losses(losses)
        gen_wrapper.update_params(total)

        if phase['disc']:
            disc_wrapper.zero_grad()  # drop grads left by the GAN term
            with disc_wrapper.optim_context(self.discriminator):
                d_losses = self.discriminator_loss(images, recon)
                d_total, d_log = self.parse_losses(d_losses)
            disc_wrapper.update_params(d_total)
            d_log.pop('loss')  # keep 'loss' the generator's total
            log_vars.update(d_log)
        return log_vars

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[dict] = None,
                mode: str = 'tensor') -> Union[dict, list, torch.Tensor]:
        """``'loss'``: reconstruction losses (no GAN); ``'predict'``: a list
        of ``{'pred', 'gt'}`` dicts; ``'tensor'``: reconstructions."""
        tokenizer = unwrap(self.tokenizer)
        if mode == 'loss':
            return self.generator_losses(inputs, use_gan=False)[0]
        # Inside a runner loop: shape checks only, no value check (a device
        # sync per batch; a damaged image must not end a validation pass).
        recon = tokenizer.reconstruct(inputs, check_range=False)
        if mode == 'tensor':
            return recon
        if mode == 'predict':
            return self.pack_predictions(recon, inputs, data_samples)
        raise ValueError(f"mode='{mode}' is not 'loss', 'predict' or "
                         "'tensor'")

    @staticmethod
    def pack_predictions(recon: torch.Tensor, images: torch.Tensor,
                         data_samples: Optional[dict]) -> List[dict]:
        """Per-image ``{'pred': [3,H,W], 'gt': [3,H,W], ...}`` on the CPU."""
        recon, images = recon.float().cpu(), images.float().cpu()
        out = []
        for i in range(recon.shape[0]):
            item = {'pred': recon[i], 'gt': images[i]}
            for key, value in (data_samples or {}).items():
                item[key] = value[i].item() if torch.is_tensor(value) \
                    and value.dim() else value[i]
            out.append(item)
        return out
