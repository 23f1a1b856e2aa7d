"""timm model names: tagged names are accepted wherever timm accepts them,
unknown names are refused with the closest names timm knows."""
import pytest
import timm

from decq_plugin.models.discriminators.dino_discriminator import \
    DINODiscriminator
from decq_plugin.models.encoders.timm_encoder import TimmViTEncoder
from decq_plugin.models.encoders.timm_names import check_timm_name

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize('name', ['vit_base_patch16_224.mae',
                                  'vit_small_patch8_224.dino',
                                  'vit_base_patch14_reg4_dinov2.lvd142m',
                                  'vit_base_patch14_reg4_dinov2'])
def test_tagged_names_build_an_encoder(name):
    assert timm.is_model(name)
    enc = TimmViTEncoder(model_name=name, input_size=112, pretrained=False,
                         model_kwargs=TINY_VIT)
    assert enc.model_name == name
    assert enc.vit.pretrained_cfg['architecture'] == name.split('.')[0]
    if '.' in name:  # timm resolved the tag, not the default weights
        assert enc.vit.pretrained_cfg['tag'] == name.split('.')[1]


def test_tagged_name_builds_a_discriminator():
    disc = DINODiscriminator(
        model_name='vit_base_patch16_224.mae', pretrained=False,
        block_indices=(0, 1), head_channels=8, kernel_size=3, input_size=32,
        model_kwargs=dict(img_size=32, **TINY_VIT))
    assert disc.feature_net.pretrained_cfg['tag'] == 'mae'


@pytest.mark.parametrize('name, expected', [
    ('vit_base_patch14_reg4_dinov3', 'vit_base_patch14_reg4_dinov2'),
    ('vit_smal_patch8_224.dino', 'vit_small_patch8_224.dino'),
    ('vit_bse_patch16_224', 'vit_base_patch16_224'),
])
def test_misspelt_names_get_close_suggestions(name, expected):
    with pytest.raises(ValueError) as info:
        TimmViTEncoder(model_name=name, pretrained=False)
    message = str(info.value)
    assert f'TimmViTEncoder: model_name={name!r} is not a timm model' in \
        message
    assert repr(expected) in message


def test_unknown_tag_lists_the_architecture_tags():
    with pytest.raises(ValueError) as info:
        check_timm_name('vit_small_patch8_224.dnio', 'X')
    message = str(info.value)
    assert "not the pretrained tag 'dnio'" in message
    assert "'vit_small_patch8_224.dino'" in message


def test_discriminator_misspelt_name():
    with pytest.raises(ValueError, match=r"DINODiscriminator: model_name="
                       r"'vit_smal_patch8_224\.dino'.*'vit_small_patch8_224"
                       r"\.dino'"):
        DINODiscriminator(model_name='vit_smal_patch8_224.dino',
                          pretrained=False)


def test_source_prefixed_names_are_left_to_timm():
    name = 'hf-hub:timm/vit_small_patch8_224.dino'
    assert check_timm_name(name, 'X') == name
