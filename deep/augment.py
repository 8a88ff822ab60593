"""Batched augmentation on the device, in the style of airbench.

Images stay uint8 (N, C, H, W) on the training device; a whole batch is cropped, flipped and
cut out with a few tensor ops and one torch.Generator, so there is no per-image Python work and
no worker processes. Reflect padding is done by index arithmetic (no padded copy), so crops
work on uint8 directly.

Spec strings (the `augment` parameter of deep methods): tokens joined by "-" or "+":
  "none"            no augmentation
  "flip"            random horizontal flip (p = 0.5)
  "crop" / "crop:P" random crop with reflect padding P pixels (default: image side / 8)
  "cutout:S"        one random S x S square set to zero per image (default S = side / 4)
So "flip-crop" is the standard CIFAR recipe and "flip-crop-cutout:12" adds cutout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cvbench.errors import UserError


@dataclass(frozen=True)
class AugmentSpec:
    """Parsed augmentation spec (pad 0 = no crop, cutout 0 = no cutout)."""

    flip: bool = False
    pad: int = 0
    cutout: int = 0

    @property
    def active(self) -> bool:
        return self.flip or self.pad > 0 or self.cutout > 0


def parse_augment(spec: str | None, image_size: int = 32) -> AugmentSpec:
    """Parse an augmentation spec string (see module docstring) for images of side image_size."""
    text = (spec or "none").strip().lower()
    if text in ("none", "", "off", "false"):
        return AugmentSpec()
    flip, pad, cutout = False, 0, 0
    for token in text.replace("+", "-").split("-"):
        name, _, arg = token.partition(":")
        try:
            value = int(arg) if arg else None
        except ValueError:
            raise UserError(f"augment spec {spec!r}: {token!r} needs an integer after ':'") from None
        if name == "flip":
            flip = True
        elif name == "crop":
            pad = value if value is not None else max(1, image_size // 8)
        elif name == "cutout":
            cutout = value if value is not None else max(1, image_size // 4)
        else:
            raise UserError(
                f"unknown augmentation {token!r} in {spec!r}; expected tokens flip, crop[:pad], "
                "cutout[:size] joined by '-', or 'none'"
            )
    return AugmentSpec(flip=flip, pad=pad, cutout=cutout)


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect indices into [0, n) like numpy's 'reflect' padding (edge not repeated)."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of the reflect-padded batch back to the input size.

    x: (N, C, H, W) of any dtype; offsets are drawn uniformly in [-pad, pad] per image.
    """
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    gen_device = generator.device if generator is not None else x.device
    offsets = torch.randint(-pad, pad + 1, (2, n), generator=generator, device=gen_device).to(x.device)
    rows = _reflect(offsets[0, :, None] + torch.arange(h, device=x.device), h)  # (N, H)
    cols = _reflect(offsets[1, :, None] + torch.arange(w, device=x.device), w)  # (N, W)
    # two gathers (rows, then columns) keep memory traffic at 2 x batch size
    x = torch.gather(x, 2, rows[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return torch.gather(x, 3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    gen_device = generator.device if generator is not None else x.device
    mask = torch.rand(x.shape[0], generator=generator, device=gen_device).to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random size x size square per image (centre uniform, square may be clipped)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    gen_device = generator.device if generator is not None else x.device
    cy = torch.randint(0, h, (n,), generator=generator, device=gen_device).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=gen_device).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - size // 2)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - size // 2)
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


def apply_augment(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply crop, flip and cutout (in that order) to a (N, C, H, W) batch."""
    if spec.pad:
        x = random_crop(x, spec.pad, generator)
    if spec.flip:
        x = random_flip(x, generator)
    if spec.cutout:
        x = cutout(x, spec.cutout, generator)
    return x


NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # Study A's constants (the widely copied CIFAR-10 values)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def parse_normalize(spec: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean/std (in [0, 1] units) for a normalize spec; None means "compute from train data".

    Accepts a name ("cifar10", "imagenet", "half", "none"), "auto"/"dataset" (per-channel
    statistics of the training pixels), or explicit "m1,m2,m3/s1,s2,s3".
    """
    key = (spec or "auto").strip().lower()
    if key in ("auto", "dataset", "data"):
        return None
    if key in NORMALIZATIONS:
        return NORMALIZATIONS[key]
    try:
        mean_s, std_s = key.split("/")
        mean = tuple(float(v) for v in mean_s.split(","))
        std = tuple(float(v) for v in std_s.split(","))
    except ValueError:
        raise UserError(
            f"normalize {spec!r} not understood; expected one of {', '.join(NORMALIZATIONS)}, "
            "'auto', or 'm1,m2,m3/s1,s2,s3'"
        ) from None
    if len(mean) != len(std) or min(std) <= 0:
        raise UserError(f"normalize {spec!r}: need as many means as stds, and stds > 0")
    return mean, std
