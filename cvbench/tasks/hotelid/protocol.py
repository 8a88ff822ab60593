"""Hotel-ID's protocol: the study's 2x2, trained with / without occlusion masks x tested on
clean / occluded photographs, as two conditions any method runs under.

- `train_occlusion` = "none" | "masks" (acts on the training batches): occluders from
  `train_masks/` (generated shapes when the data has none) pasted on each training image
  with probability TRAIN_P, filled red. The deep engine pastes them per batch; any other
  method trains on the split plus one occluded copy of every image.
- `test_occlusion` = "none" | "masks" (acts on the test split): one red (255, 0, 0) occluder
  per test image, like Kaggle's test photographs, drawn deterministically per image with
  TEST_OCCLUSION_SEED, so every run sees the same occluded test set.

The runner fits once per training side and predicts on both test sides.
"""

from __future__ import annotations

from cvbench.conditions import Condition
from cvbench.derived import augmented_split
from cvbench.split import BatchAugment, Split

from .occlusion import apply_fill, list_masks, occlude, sample_masks

MODES = ("none", "masks")
TRAIN_FILL = "red"
TRAIN_P = 0.5
TEST_FILL = "red"  # what Kaggle's occluded test photographs look like
TEST_OCCLUSION_SEED = 2022  # one occluded test set shared by every run, whatever its seed


def _source(masks: list[str]) -> str:
    return f"train_masks ({len(masks)} files)" if masks else "generated masks (no train_masks/ in the data)"


def _train(split: Split, value: str, seed: int) -> Split:
    if value == "none":
        return split
    masks = list_masks(split.meta.get("masks_dir"))

    def apply(images, rng, p):
        return occlude(images, rng, masks, fill=TRAIN_FILL, p=p)[0]

    return split.with_augment(BatchAugment("occlusion", apply, p=TRAIN_P, facts={
        "source": _source(masks), "fill": TRAIN_FILL, "p": TRAIN_P}))


def occluded_split(split: Split, seed: int = TEST_OCCLUSION_SEED, fill: str = TEST_FILL) -> Split:
    """`split` with one occluder pasted on every image, deterministic per item (path) and seed;
    written once to the cache. meta["occlusion"] says what was done."""
    masks = list_masks(split.meta.get("masks_dir"))

    def apply(batch, rng):
        m = sample_masks(1, batch.shape[1:3], rng, masks)
        return apply_fill(batch, m, fill), float(m.mean())

    out = augmented_split(split, apply, seed, tag=f"occlusion:{fill}:{len(masks)}",
                          name=f"{split.name}+occluded")
    out.meta["occlusion"] = {"source": _source(masks), "fill": fill, "seed": seed,
                             "covered_mean": out.meta.get("augmented_mean")}
    return out


def _test(split: Split, value: str, seed: int) -> Split:
    return split if value == "none" else occluded_split(split)


CONDITIONS = (
    Condition("train_occlusion", "train_batches", _train, values=MODES,
              what="occluders pasted on training images (per batch, or one occluded copy)"),
    Condition("test_occlusion", "test", _test, values=MODES,
              what="one red occluder on every test image (fixed seed)"),
)
