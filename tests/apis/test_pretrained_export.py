"""tools/export.py and decq_plugin.apis.load_pretrained: a tokenizer or a
DiT-DH written as config.json + model.safetensors comes back with the same
outputs, from the EMA weights unless asked for the raw ones, with its VFM
stored or referenced by timm name."""
import json
import os.path as osp

import pytest
import torch
from safetensors.torch import load_file

from decq_plugin.apis import build_model_from_config, load_pretrained
from decq_plugin.apis.pretrained import PretrainedFormatError

from tiny_models import DEMO_DECQ as DECQ
from tiny_models import ROOT, build_demo_decq, load_tool

DIT = str(ROOT /
          'configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py')


def _export_tool():
    return load_tool('export', 'decq_tool_export')


def _checkpoint(model, prefix: str, path: str) -> dict:
    """An EMAHook-style checkpoint: 'state_dict' holds the averaged
    weights (here: the model's), 'ema_state_dict' the raw trainable ones
    (here: the averaged ones plus 1)."""
    state = model.state_dict()
    raw = {f'module.{k}': v + 1 for k, v in state.items()
           if k.startswith(prefix + '.') and v.is_floating_point()
           and '.encoder.' not in f'.{k}'}
    torch.save(dict(state_dict=state, ema_state_dict=raw), path)
    return state


@pytest.fixture(scope='module')
def stage1(tmp_path_factory):
    model = build_demo_decq()
    path = str(tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth')
    _checkpoint(model, 'tokenizer', path)
    return model, path


def _tokenizer_outputs(tokenizer, images):
    with torch.no_grad():
        latents = tokenizer.encode(images)
        return latents, tokenizer.decode(latents)


def test_tokenizer_round_trip(stage1, tmp_path):
    model, ckpt = stage1
    out = str(tmp_path / 'decq')
    _export_tool().main([DECQ, ckpt, out, '--cfg-options',
                         'model.discriminator=None'])
    meta = json.load(open(osp.join(out, 'config.json')))
    assert meta['kind'] == 'tokenizer' and meta['vfm']['included']
    assert meta['source']['weights'] == 'ema'
    assert meta['latent_shapes'] == {'patch': [96, 4, 4], 'query': [8, 96]}
    loaded = load_pretrained(out)
    assert type(loaded).__name__ == 'DecQTokenizer' and not loaded.training
    images = torch.rand(2, 3, 64, 64)
    model.tokenizer.eval()
    want = _tokenizer_outputs(model.tokenizer, images)
    got = _tokenizer_outputs(loaded, images)
    for key in ('patch', 'query'):
        assert torch.equal(got[0][key], want[0][key])
    assert torch.equal(got[1], want[1])


def test_raw_weights_and_referenced_vfm(stage1, tmp_path):
    model, ckpt = stage1
    tool = _export_tool()
    raw = str(tmp_path / 'raw')
    tool.main([DECQ, ckpt, raw, '--raw', '--cfg-options',
               'model.discriminator=None'])
    w = load_file(osp.join(raw, 'model.safetensors'))
    ema = model.tokenizer.state_dict()
    assert torch.equal(w['decoder.head.weight'],
                       ema['decoder.head.weight'] + 1)
    assert torch.equal(w['encoder.vit.cls_token'],
                       ema['encoder.vit.cls_token'])  # frozen: no raw copy
    ref = str(tmp_path / 'ref')
    tool.main([DECQ, ckpt, ref, '--vfm', 'reference', '--cfg-options',
               'model.discriminator=None'])
    w = load_file(osp.join(ref, 'model.safetensors'))
    assert not any(k.startswith('encoder.vit.') for k in w)
    assert 'decoder.head.weight' in w and 'condenser.queries' in w
    meta = json.load(open(osp.join(ref, 'config.json')))
    assert meta['vfm'] == dict(model_name='vit_base_patch14_reg4_dinov2',
                               type='TimmViTEncoder', included=False)
    # Offline, timm cannot fetch the named weights: a clear error ...
    with pytest.raises(FileNotFoundError, match='weights_path'):
        load_pretrained(ref)
    # ... and a local file of the VFM gives the exported tokenizer back.
    vfm_file = str(tmp_path / 'vfm.pth')
    vit = dict(model.tokenizer.encoder.vit.state_dict())
    vit.update({'norm.weight': torch.ones(96), 'norm.bias': torch.zeros(96)})
    torch.save(vit, vfm_file)  # a timm file has the final norm too
    loaded = load_pretrained(ref, vfm_weights=vfm_file)
    images = torch.rand(2, 3, 64, 64)
    model.tokenizer.eval()
    assert torch.equal(_tokenizer_outputs(loaded, images)[1],
                       _tokenizer_outputs(model.tokenizer, images)[1])


def test_dit_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model_from_config(DIT)
    ckpt = str(tmp_path / 'iter_1.pth')
    _checkpoint(model, 'denoiser', ckpt)
    out = str(tmp_path / 'dit')
    _export_tool().main([DIT, ckpt, out])
    meta = json.load(open(osp.join(out, 'config.json')))
    assert meta['kind'] == 'denoiser' and meta['num_classes'] == 8
    assert meta['model']['grid_size'] == 4
    loaded = load_pretrained(out)
    noise = model.make_noise(2, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([0.3, 0.8]), torch.tensor([1, 5])
    with torch.no_grad():
        want = model.denoiser(noise, t, y)
        got = loaded(noise, t, y)
    for key in want:
        assert torch.equal(got[key], want[key])


def test_not_an_export(tmp_path):
    with pytest.raises(PretrainedFormatError, match='config.json'):
        load_pretrained(str(tmp_path))
