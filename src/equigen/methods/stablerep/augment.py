"""SimCLR's augmentations, applied to a whole batch at once (on whatever device the batch is on).

torchvision's transforms augment one image per call: 128 small images cost more than the ViT
step they feed on a CPU (bench/stablerep_speed.py), and on a GPU they keep the images on the
host. Here every random parameter is drawn for the whole batch from one ``torch.Generator``
(so a resumed run draws the same ones: its state is checkpointed with the sampler's), and each
operation is one batched tensor op:

1. random resized crop + horizontal flip: one affine ``grid_sample`` per batch (torchvision's
   crop sampling: area in ``scale``, log-uniform aspect ratio in [3/4, 4/3], 10 tries, else the
   whole image);
2. colour jitter with probability 0.8: brightness, contrast, saturation 0.4, hue 0.1, in that
   fixed order (torchvision shuffles the order per image); the hue shift is a rotation about the
   grey axis in YIQ space, the usual linear stand-in for an HSV hue shift;
3. grayscale with probability 0.2;
4. Gaussian blur with probability 0.5, sigma in [0.1, 2], kernel ~10% of the image (odd),
   as a separable convolution with one kernel per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_RGB_TO_YIQ = torch.tensor([_LUMA,
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]])


class BatchedSimCLRAugment:
    """``augment(images_uint8_BCHW, generator) -> float32 BCHW in [0, 1]`` at ``size`` pixels."""

    def __init__(self, size: int, min_scale: float = 0.08, jitter: float = 0.4, hue: float = 0.1,
                 p_jitter: float = 0.8, p_gray: float = 0.2, p_blur: float = 0.5,
                 blur_sigma: tuple[float, float] = (0.1, 2.0)):
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.size, self.min_scale = size, min_scale
        self.jitter, self.hue = jitter, hue
        self.p_jitter, self.p_gray, self.p_blur = p_jitter, p_gray, p_blur
        self.blur_sigma = blur_sigma
        self.blur_kernel = max(3, (size // 10) | 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (B, 3, H, W), got "
                             f"{tuple(images.shape)} {images.dtype}")
        b = images.shape[0]
        rand = lambda *shape: torch.rand(*shape, generator=generator).to(images.device)  # noqa: E731
        x = images.float().div_(255)
        x = self.crop_and_flip(x, generator)
        x = self.color_jitter(x, rand(b) < self.p_jitter, rand(b, 4))
        gray = rand(b) < self.p_gray
        x = torch.where(gray[:, None, None, None], grayscale(x).expand_as(x), x)
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * rand(b)
        return self.blur(x, rand(b) < self.p_blur, sigma)

    def crop_boxes(self, height: int, width: int, b: int,
                   generator: torch.Generator) -> torch.Tensor:
        """(B, 4) crop boxes (top, left, h, w) in pixels, sampled as torchvision's
        RandomResizedCrop does (up to 10 tries per image, then the whole image)."""
        tries = 10
        area = height * width * (self.min_scale + (1 - self.min_scale)
                                 * torch.rand(b, tries, generator=generator))
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(
            b, tries, generator=generator)
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().round()
        h = (area / ratio).sqrt().round()
        valid = (w <= width) & (h <= height) & (w > 0) & (h > 0)
        first = valid.float().argmax(dim=1)
        rows = torch.arange(b)
        h, w = h[rows, first], w[rows, first]
        any_valid = valid.any(dim=1)
        h = torch.where(any_valid, h, torch.full_like(h, height))
        w = torch.where(any_valid, w, torch.full_like(w, width))
        top = ((height - h + 1) * torch.rand(b, generator=generator)).floor()
        left = ((width - w + 1) * torch.rand(b, generator=generator)).floor()
        return torch.stack([top, left, h, w], dim=1)

    def crop_and_flip(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, height, width = x.shape
        top, left, h, w = self.crop_boxes(height, width, b, generator).unbind(1)
        flip = torch.rand(b, generator=generator) < 0.5
        # output coordinates u in [-1, 1] map to the crop box in the input's normalized frame
        sx = w / width * torch.where(flip, -1.0, 1.0)
        sy = h / height
        cx = (left + w / 2) / width * 2 - 1
        cy = (top + h / 2) / height * 2 - 1
        zeros = torch.zeros(b)
        theta = torch.stack([torch.stack([sx, zeros, cx], 1),
                             torch.stack([zeros, sy, cy], 1)], 1).to(x)
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def color_jitter(self, x: torch.Tensor, apply: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation factors in [1 - j, 1 + j], hue in [-hue, hue] turns;
        images where ``apply`` is False are returned unchanged."""
        one = torch.ones_like(u[:, 0])
        factors = 1 - self.jitter + 2 * self.jitter * u[:, :3]
        brightness, contrast, saturation = (torch.where(apply, f, one) for f in factors.unbind(1))
        hue = torch.where(apply, self.hue * (2 * u[:, 3] - 1), torch.zeros_like(one))
        view = lambda t: t[:, None, None, None]  # noqa: E731
        x = (x * view(brightness)).clamp_(0, 1)
        mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (view(contrast) * x + (1 - view(contrast)) * mean).clamp_(0, 1)
        x = (view(saturation) * x + (1 - view(saturation)) * grayscale(x)).clamp_(0, 1)
        return rotate_hue(x, hue).clamp_(0, 1)

    def blur(self, x: torch.Tensor, apply: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        k = self.blur_kernel
        offsets = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)
        identity = (offsets == 0).to(x.dtype).expand(b, k)
        kernel = torch.where(apply[:, None], kernel, identity).repeat_interleave(c, 0)
        flat = F.pad(x.reshape(1, b * c, height, width), [k // 2] * 4, mode="reflect")
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
        flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)
        return flat.reshape(b, c, height, width)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma, the weights torchvision uses."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b)[:, None]


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's chroma by ``turns`` of a full circle in YIQ space (luma kept)."""
    to_yiq = _RGB_TO_YIQ.to(x)
    angle = -2 * math.pi * turns.to(x)  # the sign that turns red towards yellow, as HSV does
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(turns), 3, 3, dtype=x.dtype, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x)
