"""Con2R: its target graph, its embedding-graph loss and the term on a batch, against float64 loop references written
from the definitions (docs/methods.md)."""

import math
from types import SimpleNamespace

import pytest
import torch

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import Con2RLoss, con2r_graph_loss, con2r_target_graph

EPS = 1e-6


def _target_reference(pq, pn, probs_q, probs_n, rf, alpha):
    graph = []
    for x, p in zip(pq, probs_q):
        row = []
        for y, q in zip(pn, probs_n):
            overlap = 1.0
            for a, b in zip(x, y):
                overlap *= max(0.0, rf - abs(a - b)) / rf
            kl = sum((pi - qi) * (math.log(max(pi, EPS)) - math.log(max(qi, EPS))) for pi, qi in zip(p, q))
            row.append(alpha * overlap + (1 - alpha) * math.exp(-kl))
        graph.append(row)
    return graph


def _loss_reference(eq, en, target, temperature):
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    eq, en = [unit(v) for v in eq], [unit(v) for v in en]
    sim = [[sum(a * b for a, b in zip(u, v)) / temperature for v in en] for u in eq]
    n, m = len(eq), len(en)
    forward = 0.0
    for i in range(n):
        z = math.log(sum(math.exp(s) for s in sim[i]))
        total = sum(target[i])
        forward -= sum(target[i][j] / total * (sim[i][j] - z) for j in range(m)) / n
    backward = 0.0
    for j in range(m):
        z = math.log(sum(math.exp(sim[i][j]) for i in range(n)))
        total = sum(target[i][j] for i in range(n))
        backward -= sum(target[i][j] / total * (sim[i][j] - z) for i in range(n)) / m
    return (forward + backward) / 2


@pytest.mark.parametrize("dims", [2, 3])
def test_target_graph_against_a_loop_reference(dims):
    g = torch.Generator().manual_seed(dims)
    pq, pn = torch.randint(0, 20, (3, dims), generator=g), torch.randint(0, 20, (4, dims), generator=g)
    probs_q = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), 1)
    probs_n = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), 1)
    probs_n[0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # a one-hot (mask) pixel
    got = con2r_target_graph(pq, pn, probs_q, probs_n, receptive_field=12.0, alpha=0.3)
    expected = _target_reference(pq.tolist(), pn.tolist(), probs_q.tolist(), probs_n.tolist(), 12.0, 0.3)
    assert got.shape == (3, 4)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-9)


def test_target_graph_hand_case():
    # the same position and distribution: overlap 1, KL 0 -> 1; positions 10 apart on one axis with R 20 and
    # disjoint one-hot distributions (symmetric KL 2 log(1 / eps)): 0.5 * 0.5 + 0.5 * eps ** 2 ~ 0.25
    pos = torch.tensor([[0, 0]])
    one_hot = torch.tensor([[1.0, 0.0]])
    assert float(con2r_target_graph(pos, pos, one_hot, one_hot, 20.0, 0.5)) == pytest.approx(1.0)
    other = torch.tensor([[0.0, 1.0]])
    far = torch.tensor([[10, 0]])
    assert float(con2r_target_graph(pos, far, one_hot, other, 20.0, 0.5)) == pytest.approx(0.25, abs=1e-9)


def test_graph_loss_against_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    eq, en = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    target = torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1
    got = con2r_graph_loss(eq, en, target, temperature=0.5)
    expected = _loss_reference(eq.tolist(), en.tolist(), target.tolist(), 0.5)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_term_on_a_batch_with_fixed_samples_and_a_detached_target():
    # 2 images of 3 x 4 pixels, 3 classes; image 0 tagged {0, 2}, image 1 with a mask pixel (0, 0) = 1
    label = torch.full((3, 4), 255)
    label[0, 0] = 1
    annotations = collate_annotations([{"tags": torch.tensor([0, 2])}, {"label": label}], 3, (3, 4))
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64).requires_grad_()
    embeddings = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64).requires_grad_()
    term = Con2RLoss(samples=3, receptive_field=3.0, alpha=0.4, temperature=0.7)
    queries, neighbours = torch.tensor([[0, 5, 11], [0, 3, 7]]), torch.tensor([[1, 6, 6], [4, 0, 9]])
    term.sample = lambda valid: (queries, neighbours, torch.tensor([True, True]))
    context = SimpleNamespace(logits=lambda view: logits, outputs={"weak": {"projection": embeddings}},
                              annotations=annotations)
    value = term(context)

    possible = {0: [0, 2], 1: [0, 1, 2]}
    expected = 0.0
    for b in range(2):
        def distribution(pixel):
            classes = [1] if (b == 1 and pixel == 0) else possible[b]
            scores = {c: float(logits.detach()[b, c].reshape(-1)[pixel]) for c in classes}
            z = sum(math.exp(s) for s in scores.values())
            return [math.exp(scores[c]) / z if c in scores else 0.0 for c in range(3)]

        q, n = queries[b].tolist(), neighbours[b].tolist()
        target = _target_reference([divmod(p, 4) for p in q], [divmod(p, 4) for p in n],
                                   [distribution(p) for p in q], [distribution(p) for p in n], 3.0, 0.4)
        flat = embeddings[b].reshape(6, -1).detach()
        expected += _loss_reference([flat[:, p].tolist() for p in q], [flat[:, p].tolist() for p in n], target,
                                    0.7) / 2
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert logits.grad is None and embeddings.grad is not None and bool(embeddings.grad.abs().sum() > 0)


def test_sampling_draws_valid_pixels_only_and_arguments_are_named():
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[0, 1, 2] = True
    term = Con2RLoss(samples=7)
    queries, neighbours, images = term.sample(valid)
    assert images.tolist() == [True, False]
    assert queries.tolist() == [[6] * 7] and neighbours.tolist() == [[6] * 7]
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\]; got 1.5"):
        Con2RLoss(alpha=1.5)
    with pytest.raises(ValueError, match="samples must be an integer >= 1; got 0"):
        Con2RLoss(samples=0)
