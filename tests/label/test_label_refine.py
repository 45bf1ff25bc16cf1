"""Click refinement of the head (dsp_monai.label.refine); no MONAI Label needed."""

import copy

import pytest
import torch
from monai.inferers import SimpleInferer

from dsp_monai.label.refine import anchor_mask, backbone_features, refine_head
from dsp_monai.losses import DSPLoss
from dsp_monai.networks import DSPBasicUNet


@pytest.fixture
def network_and_features():
    torch.manual_seed(0)
    network = DSPBasicUNet(2, 1, num_classes=3, features=(4, 4, 8, 8, 16, 4), embedding_dim=8).eval()
    image = torch.rand(1, 1, 32, 48)
    return network, backbone_features(network, image, SimpleInferer())


def test_clicked_pixels_take_the_clicked_classes_and_the_network_is_left_alone(network_and_features):
    network, features = network_and_features
    before = copy.deepcopy(network.state_dict())
    points = [[3, 4], [20, 40], [30, 10], [15, 25]]
    classes = [0, 1, 2, 1]
    initial = network.head(features)[0].argmax(0)
    assert [int(initial[r, c]) for r, c in points] != classes
    logits, info = refine_head(network, features, points, classes, DSPLoss(), steps=60, learning_rate=0.05,
                               time_limit=60.0)
    assert logits.shape == (1, 3, 32, 48)
    assert [int(logits[0, :, r, c].argmax()) for r, c in points] == classes
    assert info["steps"] == 60 and info["loss_last"] < info["loss_first"]
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_without_steps_the_scores_are_the_network_s(network_and_features):
    network, features = network_and_features
    with torch.no_grad():
        expected = network.head(features)
    for steps, limit in ((0, 10.0), (5, 0.0)):
        logits, info = refine_head(network, features, [[1, 1]], [2], DSPLoss(), steps=steps, learning_rate=0.1,
                                   time_limit=limit)
        assert info["steps"] == 0 and info["loss_first"] is None
        torch.testing.assert_close(logits, expected)


def test_needs_points_with_classes(network_and_features):
    network, features = network_and_features
    with pytest.raises(ValueError, match=r"at least one point and one class per point; got 0 points and 0 classes"):
        refine_head(network, features, [], [], DSPLoss(), steps=3, learning_rate=0.1, time_limit=1.0)
    with pytest.raises(ValueError, match=r"got 1 points and 2 classes"):
        refine_head(network, features, [[1, 1]], [0, 1], DSPLoss(), steps=3, learning_rate=0.1, time_limit=1.0)


def test_anchor_mask_frees_the_clicks_surroundings_and_uncertain_pixels():
    logits = torch.zeros(1, 3, 5, 6)
    logits[0, 1] = 4.0  # class 1 everywhere, softmax maximum e^4 / (e^4 + 2) = 0.965
    logits[0, 2, 4, 5] = 4.0  # a tie at (4, 5): maximum 0.495
    anchor = anchor_mask(logits, [[0, 0]], radius=1.5, confidence=0.9)
    expected = torch.ones(1, 5, 6, dtype=torch.int64)
    expected[0, 0, 0] = expected[0, 0, 1] = expected[0, 1, 0] = expected[0, 1, 1] = 255  # distance < 1.5
    expected[0, 4, 5] = 255  # below the confidence
    assert torch.equal(anchor, expected)


def test_anchor_keeps_the_network_s_prediction_away_from_the_clicks(network_and_features):
    network, features = network_and_features
    base = network.head(features)
    points, classes = [[3, 4], [20, 40]], [0, 2]
    anchor = anchor_mask(base, points, radius=4, confidence=0.0)
    logits, _ = refine_head(network, features, points, classes, DSPLoss(), steps=40, learning_rate=0.05,
                            time_limit=60.0, anchor=anchor)
    refined, before = logits[0].argmax(0), base[0].argmax(0)
    assert [int(refined[r, c]) for r, c in points] == classes
    kept = (anchor[0] != 255)
    assert float((refined == before)[kept].float().mean()) > 0.9
