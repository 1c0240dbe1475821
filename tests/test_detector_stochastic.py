"""Stochastic MirrorCheck: draws from a seed, one-time weight noise undone bit for bit, no
perturbation leaking into a batch-mate, and audit verdicts re-scored to their number."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamdetect import events  # noqa: E402
from streamdetect.detector import (  # noqa: E402
    PairToScore, StochasticSettings, decide, draw, perturbed, rescore, score_batch,
)
from streamdetect.detector.stochastic import noise_seed, score_with_draw  # noqa: E402
from streamdetect.models import get_profile  # noqa: E402
from streamdetect.models.zoo import load_zoo, resolve_zoo  # noqa: E402
from streamdetect.pipeline.batcher import BatchSettings  # noqa: E402
from streamdetect.pipeline.engine import Pipeline, Request  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tiny_models: Path):
    """The tiny profile's stochastic zoo: 2 generators, 3 encoders (2 open_clip, 1 transformers)."""
    return load_zoo(resolve_zoo(get_profile("tiny", tiny_models), "stochastic"))


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    noise = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(3)]
    return noise + [Image.new("RGB", (32, 32), c) for c in ("red", "navy", "white")]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _bitwise_equal(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = module.state_dict()
    return now.keys() == state.keys() and all(torch.equal(_bits(now[k]), _bits(state[k])) for k in state)


def _bits(t: torch.Tensor) -> torch.Tensor:
    # Compare the bytes: torch.equal on floats would call -0.0 equal to 0.0.
    return t.reshape(-1).view(torch.uint8) if t.is_floating_point() else t


def test_zoo_has_three_encoders_and_two_generators(zoo) -> None:
    assert [e.name for e in zoo.encoders] == ["encoder-vit-a", "encoder-vit-b", "encoder-hf-clip"]
    assert [g.steps for g in zoo.generators] == [2, 1]


def test_draw_is_a_function_of_its_seed() -> None:
    settings = StochasticSettings(k=2, noise_scale=1e-3)
    assert draw(7, 2, 3, settings) == draw(7, 2, 3, settings)
    draws = [draw(seed, 2, 3, settings) for seed in range(60)]
    assert all(len(d.encoders) == 2 and d.encoders == tuple(sorted(d.encoders)) for d in draws)
    assert {d.encoders for d in draws} == {(0, 1), (0, 2), (1, 2)}  # every subset gets drawn
    assert {d.generator for d in draws} == {0, 1}
    assert len(draw(1, 1, 3, StochasticSettings(k=0)).encoders) == 3  # k=0: the whole zoo
    with pytest.raises(ValueError, match="k=4 encoders per request, but the encoder zoo has only 3"):
        draw(1, 1, 3, StochasticSettings(k=4))
    with pytest.raises(ValueError, match="noise_scale must be in"):
        StochasticSettings(noise_scale=-1e-3)
    assert noise_seed(1, "a") != noise_seed(1, "b") and noise_seed(1, "a") == noise_seed(1, "a")


def test_perturbation_is_undone_bit_for_bit(zoo, pictures) -> None:
    for encoder in zoo.encoders:
        before = _state(encoder.module)
        clean = encoder.embed(pictures)
        with perturbed(encoder.module, seed=3, scale=1e-3):
            assert not _bitwise_equal(encoder.module, before), f"{encoder.name}: no noise was added"
            noisy = encoder.embed(pictures)
        assert _bitwise_equal(encoder.module, before), f"{encoder.name}: weights not restored"
        assert not torch.equal(noisy, clean)
        assert torch.equal(encoder.embed(pictures), clean)
        with perturbed(encoder.module, seed=3, scale=1e-3):
            assert torch.equal(encoder.embed(pictures), noisy)  # the same seed, the same noise
        with pytest.raises(RuntimeError, match="boom"), perturbed(encoder.module, seed=4, scale=1e-2):
            raise RuntimeError("boom")
        assert _bitwise_equal(encoder.module, before), f"{encoder.name}: not restored after an error"


def test_no_perturbation_leaks_into_a_batch_mate(zoo, pictures) -> None:
    """One embed-stage batch with five drawn requests and one plain one scores every item
    exactly as it scores alone; a leaked perturbation (scale 1e-2) would move the scores."""
    settings = StochasticSettings(k=2, noise_scale=1e-2)
    regenerated = pictures[::-1]
    items = [PairToScore(pictures[i], regenerated[i], draw(100 + i, 2, 3, settings)) for i in range(5)]
    items.append(PairToScore(pictures[5], regenerated[5], None))
    before = [_state(e.module) for e in zoo.encoders]
    together = score_batch(zoo.encoders, items)
    alone = [score_batch(zoo.encoders, [item])[0] for item in items]
    assert together == alone
    assert all(_bitwise_equal(e.module, s) for e, s in zip(zoo.encoders, before))
    # ...and the noise does change scores, so the comparison above can fail.
    unperturbed = score_with_draw([zoo.encoders[j] for j in items[0].draw.encoders], pictures[0], regenerated[0],
                                  items[0].draw.seed, 0.0)
    assert unperturbed.keys() == together[0].keys() and unperturbed != together[0]


async def _judge(pipeline: Pipeline, pictures: list[Image.Image]) -> list:
    requests = [Request(f"u{i}", im, caption=f"red cat number {i}", seed=i, draw_seed=1000 + i)
                for i, im in enumerate(pictures)]
    try:
        return await asyncio.gather(*(pipeline.submit(r) for r in requests))
    finally:
        await pipeline.close()


def test_stochastic_pipeline_verdicts_rescore_to_their_number(zoo, pictures) -> None:
    before = [_state(e.module) for e in zoo.encoders]
    pipeline = Pipeline(zoo.captioner, zoo.generators, zoo.encoders, threshold=0.5,
                        batching=BatchSettings(max_batch=8, max_wait_ms=50),
                        stochastic=StochasticSettings(k=2, noise_scale=1e-3))
    verdicts = asyncio.run(_judge(pipeline, pictures))
    assert max(pipeline.embed_stage.batch_sizes) > 1, "the requests should have shared a batch"
    assert all(_bitwise_equal(e.module, s) for e, s in zip(zoo.encoders, before))
    by_spec = {e.spec: e for e in zoo.encoders}
    generators = {g.spec: g for g in zoo.generators}
    for picture, verdict in zip(pictures, verdicts):
        upload = events.Upload(upload_id=verdict.upload_id, image="s3://b/k")
        event = dict(events.VerdictEvent.build(verdict.as_dict(), upload, events.Source("uploads", 0, 0), "t",
                                               "setting", events.image_description("s3://b/k", b"png"),
                                               {"store": None, "input": None, "regenerated": None}).fields)
        # (build checks the event against the wire schema: the draw fits it)
        drawn = event["stochastic"]
        assert drawn["encoders"] == event["models"]["encoders"] and len(drawn["encoders"]) == 2
        assert drawn["seed"] == 1000 + int(verdict.upload_id[1:]) and drawn["noise_scale"] == 1e-3
        assert set(event["scores"]) == {by_spec[s].name for s in drawn["encoders"]}
        scores = rescore(event, picture, generators[event["models"]["generator"]], by_spec)
        # Batched text-to-image numerics can move a pixel by 1/255 against a batch of one;
        # the perturbation itself is reproduced exactly (test_no_perturbation_leaks...).
        assert scores == pytest.approx(event["scores"], abs=1e-4)
        assert decide(scores, 0.5)[0] == pytest.approx(event["score"], abs=1e-4)
    assert len({tuple(v.models["encoders"]) for v in verdicts}) > 1, "draws should differ between requests"
    assert len({v.models["generator"] for v in verdicts}) == 2


def test_vanilla_pipeline_is_unchanged(zoo, pictures) -> None:
    pipeline = Pipeline(zoo.captioner, zoo.generators[0], zoo.encoders, threshold=0.5)
    verdicts = asyncio.run(_judge(pipeline, pictures[:2]))
    assert all(v.stochastic is None and "stochastic" not in v.as_dict() for v in verdicts)
    assert verdicts[0].models["encoders"] == [e.spec for e in zoo.encoders]
    with pytest.raises(ValueError, match="vanilla mode uses one generator, got 2"):
        Pipeline(zoo.captioner, zoo.generators, zoo.encoders, threshold=0.5)
    with pytest.raises(ValueError, match="k=5 encoders per request"):
        Pipeline(zoo.captioner, zoo.generators, zoo.encoders, threshold=0.5, stochastic=StochasticSettings(k=5))
