"""DSPHead, DSPNet and DSPBasicUNet: shapes, the score formula, gradients, inferers, option checks."""

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from dsp_monai.losses import DSPLoss
from dsp_monai.networks import DSPBasicUNet, DSPHead, DSPNet


def _scores(embeddings, prototypes, temperature):
    """mean_k cos(f, P_ck) / tau, written out."""
    unit_f = F.normalize(embeddings, dim=1)
    unit_p = F.normalize(prototypes, dim=-1)
    return torch.einsum("bd...,ckd->bck...", unit_f, unit_p).mean(dim=2) / temperature


@pytest.mark.parametrize("spatial", [(7, 5), (3, 4, 5)])
def test_head_shapes_layers_and_score_formula(spatial):
    torch.manual_seed(0)
    head = DSPHead(len(spatial), in_channels=6, num_classes=4, embedding_dim=8, num_prototypes=3, temperature=0.1)
    head = head.double()
    features = torch.randn(2, 6, *spatial, dtype=torch.float64)
    embeddings = head.embed(features)
    assert embeddings.shape == (2, 8, *spatial) and head.prototypes.shape == (4, 3, 8)
    logits = head(features)
    torch.testing.assert_close(logits, _scores(embeddings, head.prototypes, 0.1), rtol=1e-10, atol=1e-10)
    norm, first, act, second = head.projection
    assert isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm3d)) and norm.num_features == 6
    assert first.kernel_size == (1,) * len(spatial) and (first.in_channels, first.out_channels) == (6, 8)
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.1
    assert (second.in_channels, second.out_channels) == (8, 8)


def test_temperature_is_fixed_and_defaults_follow_the_paper():
    head = DSPHead(2, in_channels=16, num_classes=5)
    assert head.temperature == 0.05 and head.prototypes.shape == (5, 5, 16) and head.num_classes == 5
    assert "temperature" not in dict(head.named_parameters()) and "temperature" not in head.state_dict()


def test_gradients_reach_prototypes_and_projection():
    head = DSPHead(2, in_channels=4, num_classes=3, embedding_dim=6)
    features = torch.randn(2, 4, 5, 5)
    head(features).square().mean().backward()
    assert head.prototypes.grad is not None and head.prototypes.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.projection.parameters())


def test_half_precision_embeddings_are_scored_with_float32_prototypes():
    head = DSPHead(2, in_channels=4, num_classes=3, embedding_dim=6)
    embeddings = torch.randn(1, 6, 4, 4)
    low = head.score(embeddings.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), head.score(embeddings), rtol=0.02, atol=0.1)


def test_net_forward_gives_logits_usable_by_a_sliding_window_inferer():
    torch.manual_seed(0)
    pointwise = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1))
    net = DSPNet(pointwise, DSPHead(2, in_channels=8, num_classes=3)).eval()
    images = torch.randn(2, 1, 20, 13)
    with torch.no_grad():
        whole = net(images)
        windows = sliding_window_inference(images, roi_size=(8, 8), sw_batch_size=3, predictor=net, overlap=0.25)
    assert isinstance(whole, torch.Tensor) and whole.shape == (2, 3, 20, 13)
    torch.testing.assert_close(windows, whole, rtol=1e-5, atol=1e-5)
    assert net.embed(images).shape == (2, 8, 20, 13)
    named = net(images, outputs=("embeddings", "logits"))
    torch.testing.assert_close(named["embeddings"], net.embed(images))
    torch.testing.assert_close(named["logits"], whole)
    assert net(images, outputs=("embeddings",)).keys() == {"embeddings"}
    with pytest.raises(ValueError, match=r"DSPNet has the outputs \['embeddings', 'logits'\]; got \['aux'\]"):
        net(images, outputs=("aux",))
    assert net.prototypes is net.head.prototypes and net.temperature == 0.05


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 24)), (3, (16, 16, 32))])
def test_basic_unet_network_trains_with_the_dsp_loss(spatial_dims, size):
    torch.manual_seed(0)
    net = DSPBasicUNet(
        spatial_dims, in_channels=2, num_classes=3, features=(4, 4, 8, 8, 16, 4), embedding_dim=6,
        backbone_channels=5, num_prototypes=2,
    )
    assert net.backbone.final_conv.out_channels == 5 and net.head.projection[1].in_channels == 5
    images = torch.randn(2, 2, *size)
    assert net(images).shape == (2, 3, *size)
    embeddings = net.embed(images)
    assert embeddings.shape == (2, 6, *size)
    point = [s // 2 for s in size]
    records = [{"tags": torch.tensor([0, 2])}, {"points": torch.tensor([point]), "point_classes": torch.tensor([1])}]
    out = DSPLoss()(embeddings, net.prototypes, net.temperature, records)
    out["total"].backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.backbone.conv_0.conv_0.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, r"spatial_dims must be 2 or 3; got 1"),
        ({"num_classes": 64}, r"num_classes must be an integer >= 1 and at most 63; got 64"),
        ({"in_channels": 0}, r"in_channels must be an integer >= 1; got 0"),
        ({"embedding_dim": 2.5}, r"embedding_dim must be an integer >= 1; got 2.5"),
        ({"num_prototypes": 0}, r"num_prototypes must be an integer >= 1; got 0"),
        ({"temperature": 0.0}, r"temperature must be a finite number > 0; got 0.0"),
        ({"temperature": float("inf")}, r"temperature must be a finite number > 0; got inf"),
    ],
)
def test_head_rejects_bad_options(kwargs, match):
    options = {"spatial_dims": 2, "in_channels": 4, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        DSPHead(**options)


def test_wrong_feature_rank_and_head_type_are_errors():
    head = DSPHead(3, in_channels=4, num_classes=3)
    with pytest.raises(ValueError, match=r"features must have shape \(B, C, \*spatial\) with 3 spatial dims; got"):
        head(torch.randn(1, 4, 5, 5))
    with pytest.raises(TypeError, match=r"head must be a DSPHead; got Conv2d"):
        DSPNet(nn.Identity(), nn.Conv2d(1, 1, 1))
