"""The attack machinery on toy gradients (no models): budgets, 8-bit rounding, keep-best and
smallest-change semantics, the target sets and the rivals a caption must beat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdetect.mini import TARGET_SETS
from streamdetect.mini.attacks import PGDSettings, pgd
from streamdetect.mini.domain import ALL_SCENES, ATTRIBUTES, TARGET_SETS as DOMAIN_SETS, changed_attributes, \
    neighbours, parse_caption, wrong_caption


def up(z: torch.Tensor) -> torch.Tensor:
    return -torch.ones_like(z)  # descent on this moves every pixel up


def test_pgd_stays_in_the_budget_and_on_8_bit_pixels() -> None:
    x = torch.full((2, 3, 4, 4), 0.5)
    out = pgd(x, up, PGDSettings(8, steps=30))
    assert torch.allclose(out, x + 8 / 255, atol=0.5 / 255)
    assert torch.equal(out * 255, (out * 255).round())


def test_freeze_keeps_each_image_at_its_first_accepted_iterate() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x[1] += 0.5  # the second image starts nearer the goal

    def reached(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return candidate.flatten(1).mean(1) >= 0.5 + 2 / 255, torch.zeros(len(candidate))

    out = pgd(x, up, PGDSettings(16, steps=40, step_fraction=0.05), check=reached, every=1, freeze=True)
    moved = (out - x).flatten(1).amax(1) * 255
    assert moved[1] == pytest.approx(2.4, abs=0.7)  # stopped as soon as it crossed, far inside eps 16
    assert moved[0] == pytest.approx(16, abs=0.6)  # never accepted: the last iterate


def test_keep_best_returns_the_accepted_iterate_of_lowest_cost() -> None:
    x = torch.zeros(1, 1, 1, 1)

    def check(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = candidate.flatten(1).mean(1) * 255
        return level >= 3, (level - 5).abs()  # accepted from 3 up, best at 5

    out = pgd(x, up, PGDSettings(10, steps=10, step_fraction=0.1), check=check, every=1)
    assert float(out.flatten()[0] * 255) == pytest.approx(5, abs=0.01)


@pytest.mark.parametrize("name", list(DOMAIN_SETS))
def test_every_target_set_changes_exactly_its_attributes(name: str) -> None:
    rng = np.random.default_rng(1)
    allowed = {tuple(ATTRIBUTES[i] for i in combo) for combo in DOMAIN_SETS[name]}
    seen = set()
    for scene in ALL_SCENES[::7]:
        changed = changed_attributes(wrong_caption(scene, rng, name), scene)
        assert changed in allowed
        seen.add(changed)
    assert len(seen) >= min(len(allowed), 3)  # the set is drawn from, not one member of it
    assert tuple(DOMAIN_SETS) == TARGET_SETS  # the CLI's cheap list names the same sets


def test_every_domain_caption_has_twelve_one_attribute_rivals() -> None:
    for scene in ALL_SCENES[::11]:
        rivals = neighbours(scene.caption)
        assert len(rivals) == 12 and scene.caption not in rivals
        assert all(len(changed_attributes(r, scene)) == 1 for r in rivals)
    assert len(neighbours("a cat on a sofa")) == len(ALL_SCENES)  # off the domain: every caption rivals it
    assert parse_caption(neighbours(ALL_SCENES[0].caption)[0]) is not None
