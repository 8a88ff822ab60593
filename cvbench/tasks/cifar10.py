"""Task `cifar10`: small ResNets under a parameter budget (studies A and B), CIFAR-10.

The page adds, from records alone: the training budget of every deep run beside the
protocol the studies used (so a few CPU epochs are never read as the 200-epoch protocol),
and the studies' claims as claims (the leaderboard draws the learning curves itself).
"""

from __future__ import annotations

from pathlib import Path

from ..data.cifar10 import BATCH_DIR, CLASSES, load_cifar10
from . import Task, register_task

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
MD5 = "c58f30108f718f92721af3b95e74349a"

# The studies' own numbers (SEEDS.md): claims, not our measurements.
STUDY_CLAIMS = (
    ("Study A: SE-ResNet [4,4,3], 4,697,742 params, 200 epochs", "test accuracy (claimed)", "0.95"),
    ("Study A: same model", "hidden shifted test set (claimed)", "0.855"),
    ("Study B: myNet (Inception), 6,158,538 params", "validation accuracy (reported)", "0.8898"),
    ("Study B: CIFAR ResNet-18, 11,173,962 params", "validation accuracy (reported)", "0.8986"),
    ("Study B: strong baseline", "validation accuracy", "0.84"),
)


def _f(x, digits: int = 3) -> str:
    from ..leaderboard import fmt

    return fmt(None if x is None else float(x), digits)


def _table(header: list[str], rows: list[list[str]]) -> str:
    from ..leaderboard import md_table

    return md_table(header, rows)


def page_sections(records: list[dict], figures_dir: Path) -> str:
    """Budget table of the deep runs and the studies' claims (figures_dir unused)."""
    deep = [r for r in records if r.get("family") == "deep"]
    parts = []
    if deep:
        rows = []
        for r in sorted(deep, key=lambda r: -float(r["metrics"].get("accuracy", 0.0))):
            info, budget = r.get("info") or {}, r.get("budget") or (r.get("info") or {}).get("budget") or {}
            rows.append([
                r.get("label") or r["method"], r["method"] + (" (quick)" if r.get("quick") else ""),
                f"{info.get('n_params', 0):,}" if info.get("n_params") else "–",
                budget.get("protocol", "–"),
                f"{budget.get('epochs_run', '–')}/{budget.get('epochs', '–')}",
                _f(info.get("wall_s"), 0), _f(info.get("train_images_per_s"), 0),
                (r.get("device") or {}).get("name", "–") if isinstance(r.get("device"), dict) else str(r.get("device", "–")),
                _f(r["metrics"].get("accuracy")),
            ])
        parts.append("## Training budgets of the deep runs\n\n"
                     "The studies trained for 200 epochs on a GPU; runs here state their own budget. "
                     "A CPU run of a few epochs or minutes measures that budget, not the studies' "
                     "protocol.\n\n" + _table(
                         ["run", "method", "params", "protocol", "epochs run", "wall s", "train img/s",
                          "device", "test accuracy"], rows))
    parts.append("## What the studies claimed (not measured here)\n\n" + _table(
        ["model / setting", "metric", "value"], [list(c) for c in STUDY_CLAIMS]))
    return "\n".join(parts)


register_task(Task(
    name="cifar10",
    title="CIFAR-10: small ResNets under a parameter budget (10 classes, 32x32)",
    source="Study A (SE-ResNet mini project) and study B (myNet / ResNet-18 homework), SEEDS.md",
    folder="cifar10",
    layout=f"{BATCH_DIR}/data_batch_1..5, test_batch, batches.meta (official python pickles), "
           "or train/<class>/*.png + test/<class>/*.png",
    load=load_cifar10,
    metrics=("topk",),
    primary="accuracy",
    fetch_help=(f"Download {URL} (md5 {MD5}, sha256 {SHA256}) and extract it into the data root's "
                f"cifar10/ folder so that cifar10/{BATCH_DIR}/data_batch_1 exists."),
    fetch_urls=((URL, SHA256, "cifar-10-python.tar.gz"),),
    quick_limit=(40, 20),
    notes=("Class order: " + ", ".join(CLASSES) + ". The shared data holds the first rows of each "
           "official batch (a subset); the variant says so."),
    extras={"page_sections": page_sections},
))
