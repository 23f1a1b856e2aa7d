# RAE's 512 px setting: the 256 px recipe with DINOv2-B/14 fed at 448 px
# (448 / 14 = 32x32 latents of 768 channels, four times the tokens) and the
# same ViT-XL decoder (patch 16) decoding them to 32 x 16 = 512 px. Training
# crop: shorter side 768, random 512 crop (the 256 recipe's 1.5x ratio);
# evaluation: ADM centre crop 512. Costs (tools/analysis/get_flops.py and a
# memory estimate): configs/README.md, "512 px".
_base_ = ['./rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(tokenizer=dict(encoder=dict(input_size=448)))

train_dataloader = dict(
    dataset=dict(transform=dict(type='RAETrainCrop', resize=768, crop=512)))
val_dataloader = dict(
    dataset=dict(transform=dict(type='AdmCenterCrop', size=512)))
test_dataloader = val_dataloader
