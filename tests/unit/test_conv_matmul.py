"""The CPU scorer's video head runs its 1-D convolutions as matrix products (conv_matmul): same
numbers as torch's convolutions, for every shape the architectures use."""

import pytest
import torch
from torch import nn

from model_store.architectures import build
from worker.scoring.conv_matmul import Conv1dMatmul, convs_as_matmuls


@pytest.mark.parametrize(("kernel", "stride", "dilation", "padding"),
                         [(3, 1, 1, 0), (3, 1, 2, 0), (1, 1, 1, 0), (5, 2, 1, 2), (3, 1, 1, 1), (4, 3, 2, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_matmul_conv_equals_the_convolution(kernel, stride, dilation, padding, batch):
    torch.manual_seed(kernel * 100 + stride * 10 + dilation)
    conv = nn.Conv1d(12, 7, kernel, stride=stride, dilation=dilation, padding=padding).eval()
    x = torch.randn(batch, 12, 23)
    with torch.no_grad():
        torch.testing.assert_close(Conv1dMatmul(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_grouped_or_same_padded_convolutions_are_refused():
    with pytest.raises(ValueError, match="ungrouped"):
        Conv1dMatmul(nn.Conv1d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="ungrouped"):
        Conv1dMatmul(nn.Conv1d(4, 4, 3, padding="same"))


@pytest.mark.parametrize("arch", ["single", "ensemble"])
def test_converted_heads_give_the_same_embeddings_and_leave_the_model_alone(arch):
    torch.manual_seed(3)
    member = {"architecture": "syncnet_lite_v1", "arch_params": {"video_channels": [8, 8, 16, 16]}}
    model = (build(member["architecture"], member["arch_params"]) if arch == "single"
             else build("ensemble_v1", {"members": [member, member]})).eval()
    head = model.video_head
    fast = convs_as_matmuls(head)
    assert not any(isinstance(m, nn.Conv1d) for m in fast.modules())
    assert any(isinstance(m, nn.Conv1d) for m in head.modules())  # a copy was converted
    feats = torch.randn(1, model.frame_feature_dim, 16 + 6)
    with torch.no_grad():
        torch.testing.assert_close(fast(feats), head(feats), atol=1e-5, rtol=1e-5)
