"""Refuse, before the first step, a latent folder that another tokenizer
wrote."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from decq_plugin.registry import HOOKS


def _innermost(dataset):
    while not hasattr(dataset, 'latent_shapes') and hasattr(
            dataset, 'dataset'):
        dataset = dataset.dataset
    return dataset


@HOOKS.register_module()
class LatentLayoutCheckHook(Hook):
    """Compare the cached latents' shapes (``meta.json``) with the model's
    tokenizer before training starts; a mismatch is a ``ValueError`` naming
    the folder and the config keys. A no-op unless both the training set
    and the model have ``latent_shapes`` (stage 2 on cached latents)."""

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        loader = runner.train_dataloader
        dataset = _innermost(getattr(loader, 'dataset', None))
        if not (hasattr(model, 'latent_shapes')
                and hasattr(dataset, 'latent_shapes')):
            return
        want = {k: tuple(v) for k, v in model.latent_shapes.items()}
        have = {k: tuple(v) for k, v in dataset.latent_shapes.items()}
        if want != have:
            root = getattr(dataset, 'data_root', '?')
            raise ValueError(
                f'the latent folder {root} (meta.json: latent_shapes={have}, '
                f'tokenizer {dataset.meta.get("tokenizer")!r}) was not '
                f'written by this model\'s tokenizer, which makes {want}. '
                'Set train_dataloader.dataset.data_root to latents of this '
                'tokenizer, or model.tokenizer to the tokenizer that wrote '
                'them (tools/extract_latents.py writes a folder)')
