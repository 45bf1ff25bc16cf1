"""MethodTrainer: a method as named loss terms (weights, schedules, views, outputs, events), on a toy network, and
the method files of configs/methods/ as the bundle reads them."""

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.engines.utils import IterationEvents

from dsp_monai.engines import MethodTrainer
from dsp_monai.losses import LinearWarmup, build_loss_terms, required_views

ROOT = Path(__file__).resolve().parents[2]
METHODS = sorted((ROOT / "configs" / "methods").glob("*.yaml"))


class MeanLogit:
    """Toy term: scale * mean of a view's logits (live)."""

    outputs = ("logits",)

    def __init__(self, scale=1.0, view="weak"):
        self.scale, self.view, self.views = scale, view, (view,)
        self.calls = 0

    def __call__(self, context):
        self.calls += 1
        return self.scale * context.logits(self.view).float().mean()


class WithParts(MeanLogit):
    def __call__(self, context):
        value = super().__call__(context)
        return {"total": value, "half": value / 2}


def batches(count=2, strong=False):
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        batch = {"image": torch.rand(2, 1, 8, 8, generator=generator),
                 "label": torch.randint(0, 3, (2, 1, 8, 8), generator=generator)}
        if strong:
            batch["image_strong"] = torch.rand(2, 1, 8, 8, generator=generator)
        out.append(batch)
    return out


def trainer_for(loss_terms, data, network=None):
    torch.manual_seed(0)
    network = network or torch.nn.Conv2d(1, 3, 1)
    return MethodTrainer(loss_terms=loss_terms, num_classes=3, device=torch.device("cpu"), max_epochs=1,
                         train_data_loader=data, network=network,
                         optimizer=torch.optim.SGD(network.parameters(), lr=0.1))


def test_terms_are_weighted_scheduled_logged_and_exposed_live_before_backward():
    a, b = MeanLogit(2.0), WithParts(-1.0)
    trainer = trainer_for({"a": {"weight": 3.0, "term": a},
                           "b": {"weight": 0.5, "schedule": LinearWarmup(4), "term": b}}, batches())
    seen, after = [], []

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def gradients(engine):
        output = engine.state.output
        live = output["loss_terms"]
        grads = torch.autograd.grad(live["a"], engine.network.weight, retain_graph=True)[0]
        seen.append((dict(output["loss_weights"]), {k: v.requires_grad for k, v in live.items()}, grads.norm()))

    @trainer.on(Events.ITERATION_COMPLETED)
    def logged(engine):
        after.append(engine.state.output)

    trainer.run()
    assert [s[0] for s in seen] == [{"a": 3.0, "b": 0.125}, {"a": 3.0, "b": 0.25}]
    assert all(s[1] == {"a": True, "b": True} for s in seen) and all(s[2] > 0 for s in seen)
    for output, (weights, _, _) in zip(after, seen):
        terms = output["terms"]
        assert set(terms) == {"a", "b"} and all(isinstance(v, float) for v in terms.values())
        assert output["term_parts"] == {"b_half": pytest.approx(terms["b"] / 2)}
        assert float(output["loss"]) == pytest.approx(weights["a"] * terms["a"] + weights["b"] * terms["b"], rel=1e-6)
        assert not output["loss"].requires_grad
    assert a.calls == b.calls == 2


def test_a_term_of_weight_zero_is_not_computed_and_its_view_not_needed():
    off = MeanLogit(view="strong")
    trainer = trainer_for({"a": {"weight": 1.0, "term": MeanLogit()}, "off": {"weight": 0.0, "term": off}},
                          batches())
    trainer.run()
    assert off.calls == 0 and trainer.views == ("weak",) and set(trainer.state.output["terms"]) == {"a"}


def test_views_are_concatenated_for_one_forward_pass():
    calls = []
    network = torch.nn.Conv2d(1, 3, 1)
    network.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    trainer = trainer_for({"a": {"weight": 1.0, "term": MeanLogit()}, "s": {"weight": 1.0,
                                                                              "term": MeanLogit(view="strong")}},
                          batches(strong=True), network)
    trainer.run()
    assert calls == [4, 4]


def test_a_missing_view_names_the_terms_that_read_it():
    trainer = trainer_for({"s": {"weight": 1.0, "term": MeanLogit(view="strong")}}, batches())
    with pytest.raises(KeyError, match=r"the terms \['s'\] read the strong view, but the batch has no 'image_strong'"):
        trainer.run()


def test_a_network_without_the_outputs_the_terms_read_is_rejected():
    class Embeddings(MeanLogit):
        outputs = ("embeddings",)

    with pytest.raises(TypeError, match=r"the terms \['e'\] read the network outputs \['embeddings'\], which Conv2d "
                                        r"does not provide"):
        trainer_for({"e": {"weight": 1.0, "term": Embeddings()}}, batches())


@pytest.mark.parametrize(
    "loss_terms, error, pattern",
    [
        ({}, ValueError, "loss_terms must be a non-empty mapping"),
        ({"a": {"term": MeanLogit()}}, ValueError, r"loss_terms#a: expected the keys .* missing \['weight'\]"),
        ({"a": {"weight": 1.0, "term": MeanLogit(), "lambda": 2}}, ValueError, r"unknown \['lambda'\]"),
        ({"a": {"weight": -1.0, "term": MeanLogit()}}, ValueError, r"loss_terms#a#weight must be a finite number >= 0"),
        ({"a": {"weight": 1.0, "term": MeanLogit(view="cutmix")}}, ValueError, r"reads unknown views \['cutmix'\]"),
        ({"a": {"weight": 1.0, "term": torch.nn.functional.relu}}, TypeError, "must say which views it reads"),
        ({"a": {"weight": 0.0, "term": MeanLogit()}}, ValueError, r"every term has weight 0 \(\['a'\]\)"),
        ({"a": [1.0, MeanLogit()]}, TypeError, "loss_terms#a: expected a mapping"),
    ],
)
def test_malformed_methods_are_named(loss_terms, error, pattern):
    with pytest.raises(error, match=pattern):
        build_loss_terms(loss_terms)


def test_linear_warmup():
    assert [LinearWarmup(4)(i) for i in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert LinearWarmup(0)(1) == 1.0
    with pytest.raises(ValueError, match="iterations must be an integer >= 0; got -1"):
        LinearWarmup(-1)


def method_parser(method_file=None, **overrides):
    parser = ConfigParser()
    parser.read_config([str(ROOT / "bundle" / "configs" / "train.yaml"), *([str(method_file)] if method_file else [])])
    parser.update({"class_names": ["a", "b", "c"], "profile": "cpu", "device": "$torch.device('cpu')",
                   "sizes#cpu#features": [4, 4, 8, 8, 16, 4], "sizes#cpu#embedding_dim": 8, **overrides})
    return parser


def test_the_bundle_defaults_are_the_dsp_method_file():
    defaults, dsp = method_parser(), method_parser(ROOT / "configs" / "methods" / "dsp.yaml")
    assert defaults.get("loss_terms") == dsp.get("loss_terms") and defaults.get("method") == dsp.get("method")


@pytest.mark.parametrize("method_file", METHODS, ids=[m.stem for m in METHODS])
def test_method_files_build_only_the_views_their_terms_read(method_file):
    parser = method_parser(method_file)
    expected = {"dsp": ("weak", "strong"), "fixmatch_plf": ("weak", "strong"), "fixmatch": ("weak", "strong")}.get(
        method_file.stem, ("weak",))
    assert required_views(parser.get_parsed_content("loss_terms")) == expected
    assert parser.get_parsed_content("strong_view") is ("strong" in expected)
    assert parser.get_parsed_content("method") == method_file.stem
