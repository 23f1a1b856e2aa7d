"""Inference precision contexts (decq_plugin.apis.precision) on the CPU."""
import pytest
import torch

from decq_plugin.apis.precision import (default_inference_precision,
                                        inference_precision)


def test_default_is_fp32_off_the_gpu():
    assert default_inference_precision('cpu') == 'fp32'


def test_bf16_autocasts_and_flags_are_restored():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    before = torch.backends.cuda.matmul.allow_tf32
    with inference_precision('bf16', 'cpu'):
        assert layer(x).dtype == torch.bfloat16
        assert torch.backends.cuda.matmul.allow_tf32
    with inference_precision('fp32', 'cpu'):
        assert layer(x).dtype == torch.float32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match='precision must be one of'):
        with inference_precision('fp16', 'cpu'):
            pass
