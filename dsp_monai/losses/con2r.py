"""Con2R, the graph-constrained contrastive regulariser (Reiss et al., ECCV 2022; a baseline of the paper,
docs/methods.md), for 2D and 3D.

In every image, N query and N neighbour positions are drawn uniformly from the valid pixels. Two N x N graphs link
them:

- the target graph (detached): ``alpha * overlap(i, j) + (1 - alpha) * exp(-symKL(p_i, p_j))``, where ``overlap`` is
  the shared fraction of two square (cubic) receptive fields of side ``R`` centred on the positions,
  ``prod_axes max(0, R - |x_i - x_j|) / R``, and ``symKL(p, q) = KL(p || q) + KL(q || p)`` of the predicted class
  distributions at the two positions;
- the embedding graph: the softmax of ``<e_i, e_j> / temperature`` of the L2-normalised embeddings, over the
  neighbours (query -> neighbour direction) or over the queries (the reverse direction).

The loss is the cross-entropy of the row-normalised target graph against the row softmax plus that of the
column-normalised target graph against the column softmax, halved, averaged over the images.

The predicted class distribution at a pixel is the softmax of the network's logits over the classes the pixel's
annotations allow (a mask pixel: its label; tags, boxes, points: their possible classes, docs/method.md), which is
how masks and weak annotations enter the target graph. Probabilities are clamped at ``eps`` inside the logarithms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["Con2RLoss", "con2r_graph_loss", "con2r_target_graph"]


def con2r_target_graph(query_positions: torch.Tensor, neighbour_positions: torch.Tensor, query_probs: torch.Tensor,
                       neighbour_probs: torch.Tensor, receptive_field: float, alpha: float,
                       eps: float = 1e-6) -> torch.Tensor:
    """(..., N, M) target graph (not normalised) of positions (..., N, d) / (..., M, d) and class distributions
    (..., N, C) / (..., M, C); see the module docstring."""
    distance = (query_positions.unsqueeze(-2) - neighbour_positions.unsqueeze(-3)).abs().float()
    overlap = ((receptive_field - distance).clamp(min=0) / receptive_field).prod(dim=-1)
    log_q, log_n = query_probs.clamp(min=eps).log(), neighbour_probs.clamp(min=eps).log()
    difference = query_probs.unsqueeze(-2) - neighbour_probs.unsqueeze(-3)
    symmetric_kl = (difference * (log_q.unsqueeze(-2) - log_n.unsqueeze(-3))).sum(dim=-1)
    return alpha * overlap + (1 - alpha) * torch.exp(-symmetric_kl)


def con2r_graph_loss(query_embeddings: torch.Tensor, neighbour_embeddings: torch.Tensor, target: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """The two-direction cross-entropy of a target graph (..., N, M) against the embedding graph of embeddings
    (..., N, D) / (..., M, D); averaged over the leading dims."""
    q, n = F.normalize(query_embeddings.float(), dim=-1), F.normalize(neighbour_embeddings.float(), dim=-1)
    similarity = q @ n.transpose(-1, -2) / temperature
    rows = target / target.sum(dim=-1, keepdim=True)
    columns = target / target.sum(dim=-2, keepdim=True)
    forward = -(rows * F.log_softmax(similarity, dim=-1)).sum(dim=-1).mean(dim=-1)
    backward = -(columns * F.log_softmax(similarity, dim=-2)).sum(dim=-2).mean(dim=-1)
    return ((forward + backward) / 2).mean()


class Con2RLoss:
    """Con2R (module docstring) on a network output of embeddings and its logits.

    Args:
        samples: N, the query and the neighbour positions drawn per image (with replacement, from the valid
            pixels; torch's global random generator).
        receptive_field: R, the side of the receptive field in pixels.
        alpha: the weight of the receptive-field overlap in the target graph, in [0, 1].
        temperature: of the embedding graph's softmax.
        embeddings: the name of the network output holding the embeddings (B, D, *spatial).
        view: the view (``"weak"``).
        eps: clamp of the probabilities inside the logarithms.

    Raises:
        ValueError: for a non-positive sample count, receptive field or temperature, or alpha outside [0, 1].
    """

    def __init__(self, samples: int = 256, receptive_field: float = 64.0, alpha: float = 0.5,
                 temperature: float = 1.0, embeddings: str = "projection", view: str = "weak",
                 eps: float = 1e-6) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"Con2RLoss: samples must be an integer >= 1; got {samples!r}")
        for name, value in (("receptive_field", receptive_field), ("temperature", temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Con2RLoss: {name} must be a number > 0; got {value!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"Con2RLoss: alpha must be a number in [0, 1]; got {alpha!r}")
        self.samples, self.receptive_field, self.alpha = samples, float(receptive_field), float(alpha)
        self.temperature, self.eps, self.embeddings = float(temperature), float(eps), embeddings
        self.view, self.views = view, (view,)
        self.outputs = ("logits", embeddings)

    def sample(self, valid: torch.Tensor) -> tuple:
        """(B', N) flat query and neighbour pixel indices of the images with a valid pixel, and those images."""
        weights = valid.flatten(1).float()
        images = weights.sum(dim=1) > 0
        weights = weights[images]
        queries = torch.multinomial(weights, self.samples, replacement=True)
        neighbours = torch.multinomial(weights, self.samples, replacement=True)
        return queries, neighbours, images

    def __call__(self, context) -> torch.Tensor:
        logits = context.logits(self.view)
        embeddings = context.outputs[self.view][self.embeddings]
        annotations = context.annotations
        queries, neighbours, images = self.sample(annotations.valid)
        if queries.shape[0] == 0:
            return logits.new_zeros((), dtype=torch.float32)
        spatial = tuple(logits.shape[2:])

        def gather(tensor, index):  # (B, K, *spatial) at (B', N) flat pixels -> (B', N, K)
            flat = tensor[images].flatten(2)
            return flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)

        def positions(index):  # (B', N) flat -> (B', N, d) coordinates
            coords = []
            for size in reversed(spatial):
                coords.append(index % size)
                index = index // size
            return torch.stack(coords[::-1], dim=-1)

        with torch.no_grad():
            scores = logits.detach().float().masked_fill(~annotations.possible(), -math.inf)
            probs = torch.softmax(scores, dim=1)
            target = con2r_target_graph(positions(queries), positions(neighbours), gather(probs, queries),
                                        gather(probs, neighbours), self.receptive_field, self.alpha, self.eps)
        return con2r_graph_loss(gather(embeddings, queries), gather(embeddings, neighbours), target,
                                self.temperature)
