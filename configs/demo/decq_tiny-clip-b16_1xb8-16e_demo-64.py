# decq_q8-l0369_clip-b16_vit-xl_8xb64-16e_in1k-256
# at the size of the built-in demo: the tiny DecQ demo with the VFM swapped
# as the full config swaps it (same layout, tiny width, random weights;
# VFM input 64 / patch 16 = 4x4 latents, decoder patch 16 -> 64 px).
# tests/test_configs.py checks that it differs from
# decq/decq_q8-l0369_clip-b16_vit-xl_8xb64-16e_in1k-256.py only where a demo may.
_base_ = ['./decq_tiny_1xb8-16e_demo-64.py']

model = dict(
    tokenizer=dict(
        encoder=dict(
            model_name='vit_base_patch16_clip_quickgelu_224.openai',
            input_size=64)))
