"""The batched SimCLR augmentations: each operation against torchvision's on the same parameters,
crop boxes within torchvision's sampling rules, and draws from the given generator only."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from equigen.methods.stablerep.augment import BatchedSimCLRAugment, grayscale, rotate_hue


def images(b=6, size=16, seed=0):
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_crop_boxes_follow_torchvision_rules():
    aug = BatchedSimCLRAugment(32, min_scale=0.2)
    boxes = aug.crop_boxes(40, 30, 2000, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 40).all() and (left + w <= 30).all()
    cropped = (h < 40) | (w < 30)
    area = (h * w / (40 * 30))[cropped]
    ratio = (w / h)[cropped]
    # rounding to whole pixels moves area and ratio a little past the sampled range
    assert area.min() >= 0.2 - 0.03 and area.max() <= 1.0
    assert ratio.min() >= 3 / 4 - 0.06 and ratio.max() <= 4 / 3 + 0.06
    assert area.std() > 0.1  # the range is used, not one size


def test_whole_image_crop_is_the_image_or_its_mirror():
    # scale 1 with a non-square ratio never fits, so every crop falls back to the whole image
    aug = BatchedSimCLRAugment(16, min_scale=1.0)
    x = images().float() / 255
    out = aug.crop_and_flip(x, torch.Generator().manual_seed(0))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crop_matches_torchvision_resized_crop():
    aug = BatchedSimCLRAugment(16, min_scale=0.3)
    x = images(size=16).float() / 255
    generator = torch.Generator().manual_seed(3)
    boxes = aug.crop_boxes(16, 16, len(x), generator.clone_state())
    out = aug.crop_and_flip(x, generator)
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ours = out[i]
        # torchvision crops whole pixels then resizes; bilinear sampling of the box agrees
        # closely (edge pixels differ by the border rule), so compare the interior
        theirs = TF.resized_crop(x[i], top, left, h, w, [16, 16], antialias=False)
        for candidate in (theirs, theirs.flip(-1)):
            if (ours - candidate)[:, 2:-2, 2:-2].abs().mean() < 0.02:
                break
        else:
            pytest.fail(f"image {i}: crop {top, left, h, w} does not match torchvision's")


@pytest.mark.parametrize("op, theirs", [
    (0, TF.adjust_brightness), (1, TF.adjust_contrast), (2, TF.adjust_saturation)])
def test_jitter_factors_match_torchvision(op, theirs):
    aug = BatchedSimCLRAugment(16, jitter=0.4, hue=0.0)
    x = images().float() / 255
    u = torch.full((len(x), 4), 0.5)  # factor 1 for every operation ...
    u[:, op] = torch.linspace(0, 1, len(x))  # ... except the one under test: 0.6 .. 1.4
    out = aug.color_jitter(x, torch.ones(len(x), dtype=torch.bool), u)
    for i, factor in enumerate((0.6 + 0.8 * u[:, op]).tolist()):
        torch.testing.assert_close(out[i], theirs(x[i], factor).clamp(0, 1), atol=1e-5, rtol=0)


def test_jitter_skipped_images_are_unchanged():
    aug = BatchedSimCLRAugment(16)
    x = images().float() / 255
    u = torch.rand(len(x), 4, generator=torch.Generator().manual_seed(0))
    apply = torch.tensor([True, False] * 3)
    out = aug.color_jitter(x, apply, u)
    torch.testing.assert_close(out[~apply], x[~apply], atol=1e-6, rtol=0)
    assert (out[apply] - x[apply]).abs().amax() > 0.01


def test_hue_rotation_keeps_luma_and_greys_and_turns_full_circle():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([0.0, 0.1, -0.1, 1.0])
    out = rotate_hue(x, turns)
    torch.testing.assert_close(grayscale(out), grayscale(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[[0, 3]], x[[0, 3]], atol=1e-5, rtol=0)
    assert (out[1] - x[1]).abs().amax() > 0.01
    grey = torch.full((1, 3, 2, 2), 0.4)
    torch.testing.assert_close(rotate_hue(grey, torch.tensor([0.3])), grey, atol=1e-6, rtol=0)
    # a small hue shift moves the colour the same way torchvision's HSV shift does
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)
    ours, theirs = rotate_hue(red, torch.tensor([0.05]))[0, :, 0, 0], TF.adjust_hue(red[0], 0.05)[:, 0, 0]
    assert torch.sign(ours - red[0, :, 0, 0])[1] == torch.sign(theirs - red[0, :, 0, 0])[1] == 1


def test_blur_matches_torchvision_gaussian_blur():
    aug = BatchedSimCLRAugment(32)
    x = images(b=4, size=32).float() / 255
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    apply = torch.tensor([True, True, False, True])
    out = aug.blur(x, apply, sigma)
    k = aug.blur_kernel
    for i in range(4):
        expected = TF.gaussian_blur(x[i], [k, k], [sigma[i].item()] * 2) if apply[i] else x[i]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_same_generator_state_same_views_and_only_it_is_used():
    aug = BatchedSimCLRAugment(16, min_scale=0.2)
    x = images()
    torch.manual_seed(0)
    a = aug(x, torch.Generator().manual_seed(7))
    torch.manual_seed(1)  # the global RNG must not matter
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().amax() > 0.1
    assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert a.shape == (6, 3, 16, 16)


def test_output_size_and_bad_input():
    aug = BatchedSimCLRAugment(8)
    assert aug(images(size=20), torch.Generator()).shape == (6, 3, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        aug(images().float(), torch.Generator())
    with pytest.raises(ValueError, match="min_scale"):
        BatchedSimCLRAugment(8, min_scale=0)
    assert math.isclose(BatchedSimCLRAugment(64).blur_kernel, 7)
