"""AuxiliaryHeadUNet (its segmentation part is a plain BasicUNet) and the EMA teacher (its update by hand)."""

import pytest
import torch
from monai.networks.nets import BasicUNet

from dsp_monai.networks import AuxiliaryHeadUNet, DSPBasicUNet, EMATeacher, ema_teacher

FEATURES = (4, 4, 8, 8, 16, 4)


def test_auxiliary_unet_segments_as_its_basic_unet_and_exports_it_alone():
    torch.manual_seed(0)
    net = AuxiliaryHeadUNet(2, 1, 3, features=FEATURES, heads={"point_distance": 3}).eval()
    images = torch.randn(2, 1, 32, 32)
    plain = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=FEATURES).eval()
    plain.load_state_dict(net.segmentation.state_dict())  # strict: the exported model is a BasicUNet
    with torch.no_grad():
        out = net(images, outputs=("logits", "point_distance"))
        torch.testing.assert_close(net(images), plain(images))
        torch.testing.assert_close(out["logits"], plain(images))
        assert out["point_distance"].shape == (2, 3, 32, 32)
        assert net(images, outputs=("point_distance",)).keys() == {"point_distance"}
    assert net.output_names == ("logits", "point_distance")


def test_auxiliary_head_reads_the_decoder_features():
    net = AuxiliaryHeadUNet(2, 1, 3, features=FEATURES, heads={"aux": 2}).eval()
    images = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        features = net.decoder_features(images)
        torch.testing.assert_close(net(images, outputs=("aux",))["aux"], net.heads["aux"](features))
        torch.testing.assert_close(net.segmentation.final_conv(features), net(images))


@pytest.mark.parametrize(
    "heads, pattern",
    [(None, "heads must name at least one auxiliary head"),
     ({"logits": 3}, "head 'logits' must have a name other than 'logits'"),
     ({"aux": 0}, "head 'aux' must have .* channels >= 1; got 0")],
)
def test_auxiliary_unet_rejects_bad_heads(heads, pattern):
    with pytest.raises(ValueError, match=pattern):
        AuxiliaryHeadUNet(2, 1, 3, features=FEATURES, heads=heads)


def test_auxiliary_unet_names_unknown_outputs():
    net = AuxiliaryHeadUNet(2, 1, 3, features=FEATURES, heads={"aux": 2})
    with pytest.raises(ValueError, match=r"has the outputs \['logits', 'aux'\]; got \['embeddings'\]"):
        net(torch.randn(1, 1, 16, 16), outputs=("embeddings",))


def test_ema_teacher_update_by_hand_and_stays_in_eval_mode():
    torch.manual_seed(0)
    student = DSPBasicUNet(2, 1, 3, features=FEATURES, embedding_dim=4)
    teacher = EMATeacher(student, decay=0.75)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(1.0)
        student.head.projection[0].running_mean.fill_(3.0)
    teacher.train()
    teacher.update(student)
    assert not teacher.training and not teacher.model.training
    for name, parameter in student.named_parameters():
        torch.testing.assert_close(teacher.model.state_dict()[name], 0.75 * before[name] + 0.25 * parameter.detach())
        assert not dict(teacher.model.named_parameters())[name].requires_grad
    assert torch.equal(teacher.model.head.projection[0].running_mean, torch.full((4,), 3.0))
    assert set(teacher.state_dict()) == {f"model.{k}" for k in student.state_dict()}


def test_ema_teacher_factory_and_errors():
    student = torch.nn.Linear(2, 2)
    assert ema_teacher("student", student) is None
    assert isinstance(ema_teacher("ema", student, 0.5), EMATeacher)
    with pytest.raises(ValueError, match=r"pseudo_label_source must be one of \('student', 'ema'\); got 'mean'"):
        ema_teacher("mean", student)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\); got 1.0"):
        EMATeacher(student, 1.0)
