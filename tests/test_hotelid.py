"""hotelid: readers (2022 and 2021 layouts), the generated fixture, MAP@5, retrieval scores and
the 2x2 occlusion experiment end to end on a tiny fixture."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cvbench.errors import DataError
from cvbench.tasks.hotelid.reader import (
    FIXTURE_MARKER,
    detect_layout,
    folder_description,
    generate_fixture,
    split_per_hotel,
)
from cvbench.tasks.hotelid.reader import read as load_hotelid

TINY = dict(n_hotels=6, images_per_hotel=(2, 4), n_masks=3, size=(48, 36))


@pytest.fixture(scope="module")
def fixture_2022(tmp_path_factory) -> Path:
    return generate_fixture(tmp_path_factory.mktemp("fx") / "hotelid", seed=3, **TINY)


@pytest.fixture(scope="module")
def fixture_2021(tmp_path_factory) -> Path:
    return generate_fixture(tmp_path_factory.mktemp("fx21") / "hotelid", seed=3, layout="2021", **TINY)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fixture_layout_and_determinism(fixture_2022, tmp_path):
    hotels = sorted((fixture_2022 / "train_images").iterdir())
    assert len(hotels) == 6 and all(h.name.isdigit() for h in hotels)
    counts = [len(list(h.glob("*.jpg"))) for h in hotels]
    assert all(2 <= c <= 4 for c in counts)
    assert len(list((fixture_2022 / "train_masks").glob("*.png"))) == 3
    assert "GENERATED FIXTURE" in (fixture_2022 / FIXTURE_MARKER).read_text()
    again = generate_fixture(tmp_path / "again", seed=3, **TINY)
    assert _digest(again) == _digest(fixture_2022)
    other = generate_fixture(tmp_path / "other", seed=4, **TINY)
    assert _digest(other) != _digest(fixture_2022)


def test_fixture_images_vary_within_a_hotel(fixture_2022):
    from cvbench.images import load_image

    hotel = sorted((fixture_2022 / "train_images").iterdir())[0]
    a, b = (load_image(p).astype(float) for p in sorted(hotel.glob("*.jpg"))[:2])
    if a.shape == b.shape:
        assert np.abs(a - b).mean() > 3  # different viewpoint / light, not copies


def test_reader_2022(fixture_2022):
    assert detect_layout(fixture_2022) == "2022"
    train, test = load_hotelid(fixture_2022, seed=0)
    ids = sorted(h.name for h in (fixture_2022 / "train_images").iterdir())
    assert train.classes == tuple(sorted(ids, key=int)) == test.classes
    assert not set(train.items) & set(test.items)
    assert len(train) + len(test) == sum(1 for _ in (fixture_2022 / "train_images").rglob("*.jpg"))
    # every item's label is its folder; every test hotel has training images
    for split in (train, test):
        assert all(Path(p).parent.name == split.classes[y] for p, y in zip(split.items, split.labels))
    assert set(test.labels) <= set(train.labels)
    total = np.bincount(np.concatenate([train.labels, test.labels]), minlength=6)
    n_test = np.bincount(test.labels, minlength=6)
    assert (n_test == np.minimum(total - 1, np.maximum(1, np.round(0.2 * total)))).all()
    assert "GENERATED FIXTURE" in train.meta["variant"] and train.meta["fixture"] is True
    assert train.meta["n_masks"] == 3 and Path(train.meta["masks_dir"]).name == "train_masks"
    assert train.meta["layout"] == "hotel-id-2022"
    again, _ = load_hotelid(fixture_2022, seed=0)
    assert again.fingerprint == train.fingerprint
    other, _ = load_hotelid(fixture_2022, seed=1)
    assert other.fingerprint != train.fingerprint


def test_split_keeps_single_image_hotels_in_training():
    ids = ["7"] * 1 + ["3"] * 5 + ["9"] * 2
    tr, te, singles = split_per_hotel(ids, seed=0, test_fraction=0.2)
    assert singles == 1
    ids = np.asarray(ids)
    assert "7" not in set(ids[te]) and "7" in set(ids[tr])
    assert sorted(ids[te]) == ["3", "9"]  # round(0.2 * 5) = 1, min(2 - 1, 1) = 1
    assert len(set(tr) | set(te)) == 8 and not set(tr) & set(te)


def test_single_image_hotel_counted(tmp_path):
    root = generate_fixture(tmp_path / "h", seed=1, **TINY)
    lone = root / "train_images" / "5"
    lone.mkdir()
    src = next((root / "train_images").rglob("*.jpg"))
    (lone / "only.jpg").write_bytes(src.read_bytes())
    (root / "train_images" / "notes.txt").write_text("stray file")
    train, test = load_hotelid(root)
    assert train.meta["single_image_hotels"] == 1
    assert train.meta["files_outside_hotel_folders"] == 1
    c = train.classes.index("5")
    assert (train.labels == c).sum() == 1 and (test.labels == c).sum() == 0
    assert train.classes[0] == "5"  # numeric order, not string order


def test_reader_2021_matches_2022(fixture_2021, fixture_2022):
    assert detect_layout(fixture_2021) == "2021"
    tr21, te21 = load_hotelid(fixture_2021, seed=0)
    tr22, te22 = load_hotelid(fixture_2022, seed=0)
    assert tr21.classes == tr22.classes
    assert tr21.meta["layout"] == "hotel-id-2021"
    # same generator seed: the same images under other folders, so the same names and labels
    names = lambda s: sorted((Path(p).name, s.classes[y]) for p, y in zip(s.items, s.labels))  # noqa: E731
    assert names(tr21) + names(te21) and sorted(names(tr21) + names(te21)) == sorted(names(tr22) + names(te22))
    assert "chain" in tr21.groups and len(tr21.groups["chain"]) == len(tr21)
    assert all(Path(p).parent.name == str(c) for p, c in zip(tr21.items, tr21.groups["chain"]))


def _copy_2021(src: Path, dest: Path, csv_text: str) -> Path:
    import shutil

    shutil.copytree(src, dest)
    (dest / "train.csv").write_text(csv_text)
    return dest


def test_reader_2021_errors_name_file_and_line(fixture_2021, tmp_path):
    lines = (fixture_2021 / "train.csv").read_text().splitlines()
    bad_id = lines[:2] + [lines[2].replace(lines[2].split(",")[2], "x12", 1)] + lines[3:]
    root = _copy_2021(fixture_2021, tmp_path / "a", "\n".join(bad_id) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:3: hotel_id 'x12'"):
        load_hotelid(root)
    missing = lines[:3] + ["ghost.jpg,0,12345,2019-01-01 00:00:00"] + lines[3:]
    root = _copy_2021(fixture_2021, tmp_path / "b", "\n".join(missing) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:4: image file .*ghost\.jpg does not exist"):
        load_hotelid(root)
    train, test = load_hotelid(root, skip_bad=True)
    assert train.meta["missing_files_skipped"] == 1
    assert len(train) + len(test) == len(lines) - 1
    root = _copy_2021(fixture_2021, tmp_path / "c", "image,hotel_id,timestamp\na.jpg,1,2\n")
    with pytest.raises(DataError, match=r"train\.csv:1: header lacks column 'chain'"):
        load_hotelid(root)
    short = lines[:2] + ["a.jpg,0"]
    root = _copy_2021(fixture_2021, tmp_path / "d", "\n".join(short) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:3: expected 4 fields"):
        load_hotelid(root)


def test_missing_layout_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no Hotel-ID data found"):
        detect_layout(tmp_path)
    (tmp_path / "train_images").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_hotelid(tmp_path)


def test_map5_hand_computed():
    from cvbench.metrics import map_at_k, top_k_accuracy

    # true class ranks: 1, 3, 6 (outside the top 5), 2
    scores = np.array([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.4, 0.3, 0.0, 0.0, 0.0],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        [0.2, 0.8, 0.1, 0.0, 0.0, 0.0],
    ])
    y = np.array([0, 2, 5, 0])
    assert map_at_k(y, scores, 5) == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert top_k_accuracy(y, scores, 5) == pytest.approx(3 / 4)
    assert top_k_accuracy(y, scores, 1) == pytest.approx(1 / 4)


def test_retrieval_scores_best_match_per_hotel():
    from cvbench.deep.retrieval import retrieval_scores

    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1])
    query = np.array([[2.0, 0.0], [0.0, 3.0]])
    s = retrieval_scores(query, gallery, labels, n_classes=3)
    r = 1 / np.sqrt(2)
    assert s[0] == pytest.approx([1.0, r, -2.0])  # hotel 1's best match is [1, 1]
    assert s[1] == pytest.approx([0.0, 1.0, -2.0])  # hotel 2 has no gallery image


def test_task_registration_and_fixture_command(tmp_path):
    from cvbench.tasks import get_task

    task = get_task("hotelid")
    assert task.primary == "map5" and set(task.metrics) == {"map5", "topk"}
    assert "kaggle competitions download -c hotel-id-to-combat-human-trafficking-2022-fgvc9" in task.fetch_help
    msg = task.make_fixture(tmp_path / "root", seed=0, **TINY)
    assert (tmp_path / "root" / "hotelid" / FIXTURE_MARKER).is_file() and "--data-dir" in msg
    train, test = task.load_splits(tmp_path / "root")
    assert "GENERATED FIXTURE" in test.meta["variant"]


def test_suite_file_is_valid():
    from cvbench.methods import create_method
    from cvbench.paths import repo_root
    from cvbench.suite import load_suite

    suite = load_suite(repo_root() / "suites" / "hotelid.toml", "hotelid")
    for quick in (False, True):
        specs = suite.specs(quick=quick)
        assert specs
        for spec in specs:
            create_method(spec.method, **spec.params)
    assert any(s.method == "majority-class" for s in suite.specs())  # the floor
    occ = [s for s in suite.specs() if s.conditions]
    cells = {(s.label, s.conditions.get("train_occlusion"), s.conditions.get("test_occlusion")) for s in occ}
    for label in {s.label for s in occ}:
        assert {(a, b) for lab, a, b in cells if lab == label} == {
            ("none", "none"), ("none", "masks"), ("masks", "none"), ("masks", "masks")}
    study = [b for b in suite.blocks if b.gpu_only]
    assert study and study[0].params["model"] == "vgg16"
    assert (study[0].params["optimizer"], study[0].params["lr"], study[0].params["batch_size"],
            study[0].params["image_size"]) == ("adam", 0.001, 32, 224)


def test_study_network_has_the_study_parameter_count():
    torch = pytest.importorskip("torch")
    from cvbench.deep.models import count_parameters, create_model

    with torch.device("meta"):  # no memory, no time: only shapes
        net = create_model("vgg16", 3116)
    assert count_parameters(net) == 147_026_796


def test_two_by_two_on_the_fixture(tmp_path, fixture_2022):
    """The study's 2x2 (train with / without masks x clean / occluded test) with plain tiny-image
    k-NN under the task's conditions: two fits, four records, the page's table from records."""
    from cvbench.leaderboard import render_task
    from cvbench.plan import RunOptions, RunSpec, expand_sweep, plan_runs
    from cvbench.results import load_records
    from cvbench.run import execute
    from cvbench.tasks import get_task

    task = get_task("hotelid")
    options = RunOptions(data_dir=str(fixture_2022.parent), progress=False)
    grid = {"train_occlusion": ["none", "masks"], "test_occlusion": ["none", "masks"]}
    specs = [RunSpec("tiny-knn", {"size": 8, "k": 1}, conditions=point, label="tiny k-NN 2x2",
                     sweep=swept) for point, swept in expand_sweep(grid)]
    plan = plan_runs(task, specs, options, log=lambda m: None)
    assert len(plan.groups) == 2 and all(len(g.runs) == 2 for g in plan.groups)  # one fit per training side
    report = execute(plan, options, log=lambda m: None)
    assert report.done == 4 and not report.failed
    recs = load_records("hotelid")
    assert len({r.key for r in recs}) == 4
    for r in recs:
        assert 0 <= r.metrics["map5"] <= 1 and "top5_accuracy" in r.metrics and "map5_ci" in r.metrics
        assert "GENERATED FIXTURE" in r.variant and r.method == "tiny-knn"
    occluded = [r for r in recs if r.conditions["test_occlusion"] == "masks"]
    assert all(r.data["test_used"]["occlusion"]["source"] == "train_masks (3 files)" for r in occluded)
    assert len({r.data["test_used"]["fingerprint"] for r in occluded}) == 1  # one test set
    trained = [r for r in recs if r.conditions["train_occlusion"] == "masks"]
    assert all(r.data["train_used"]["n"] == 2 * r.data["train"]["n"] for r in trained)  # + occluded copy
    assert all("one augmented copy" in r.data["train_augment"]["how"] for r in trained)
    assert sum("fit_reused" in r.info for r in recs) == 2
    page = render_task(task, recs, tmp_path)
    assert "No run on real photographs exists yet" in page
    table = page[page.index("### tiny k-NN 2x2"):]
    assert "| without masks | top-1" in table and "| with masks | top-1" in table
    assert "not run" not in table.split("## Running")[0]
    assert "occluded minus clean test, trained without masks:" in table  # paired bootstrap lines
    assert "with minus without masks in training, occluded test:" in table
    assert "cvbench suite hotelid" in page and "cvbench data check hotelid" in page


def test_page_marks_missing_cells_and_keeps_real_runs_apart(tmp_path):
    from cvbench.report import Page
    from cvbench.results import RunRecord
    from cvbench.tasks import get_task
    from cvbench.tasks.hotelid.report import section_occlusion

    def rec(tr, te, variant, acc):
        return RunRecord(key=f"{tr}{te}{variant}", task="hotelid", method="cnn", label="cnn",
                         params={"epochs": 1}, conditions={"train_occlusion": tr, "test_occlusion": te},
                         seed=0, data={"variant": variant, "test": {"n": 3}},
                         metrics={"accuracy": acc, "top5_accuracy": acc, "map5": acc}, timings={})

    real = "real listing photos, 14 hotels (not Hotel-ID 2022)"
    page = section_occlusion(Page(get_task("hotelid"), [rec("none", "none", real, 0.5), rec("masks", "none", real, 0.25),
                                  rec("none", "none", "GENERATED FIXTURE (x)", 0.125)], [], tmp_path))
    assert "No run on real photographs exists yet" not in page
    assert "2 runs on real photographs; 1 on the generated fixture" in page
    real_part = page[page.index("### Real photographs"):page.index("### Generated fixture")]
    assert "top-1 0.500" in real_part and "top-1 0.250" in real_part and "0.125" not in real_part
    assert real_part.count("not run") == 2


def test_a_run_under_a_corruption_never_takes_a_clean_cell_of_the_2x2(tmp_path):
    """The robustness blocks ran each occlusion cell under corruptions too, with the same seed:
    the 2x2 kept the last record per (cell, seed), so a corrupted run stood in a clean cell
    (bag of SIFT's clean top-5 read 0.581, its clean runs' mean is 0.552)."""
    from cvbench.report import Page
    from cvbench.results import RunRecord
    from cvbench.tasks import get_task
    from cvbench.tasks.hotelid.report import section_occlusion

    def rec(te, acc, corruption=None):
        cond = {"train_occlusion": "none", "test_occlusion": te, **({"corruption": corruption} if corruption else {})}
        return RunRecord(key=f"{te}{corruption}", task="hotelid", method="cnn", label="cnn",
                         params={"epochs": 1}, conditions=cond, seed=0,
                         data={"variant": "real listing photos", "test": {"n": 3}},
                         metrics={"accuracy": acc, "top5_accuracy": acc, "map5": acc}, timings={})

    recs = [rec("none", 0.5), rec("masks", 0.25), rec("none", 0.125, "jpeg:3"), rec("masks", 0.0625, "jpeg:3")]
    page = section_occlusion(Page(get_task("hotelid"), recs, [], tmp_path))
    assert "top-1 0.500" in page and "top-1 0.250" in page
    assert "0.125" not in page and "0.062" not in page and "2 runs on real photographs" in page


def test_folder_description_names_the_variant(tmp_path):
    generate_fixture(tmp_path / "hotelid", seed=0, **TINY)
    (tmp_path / "hotelid" / "FIXTURE.md").unlink()
    assert folder_description(tmp_path / "hotelid") is None
    (tmp_path / "hotelid" / "README.md").write_text('# x\nVariant: "real listing photos, 6 hotels"\n')
    assert folder_description(tmp_path / "hotelid") == "real listing photos, 6 hotels"
    (tmp_path / "hotelid" / "README.md").write_text('Variant: "real listing photos, 6 hotels".\n')
    assert folder_description(tmp_path / "hotelid") == "real listing photos, 6 hotels"
    (tmp_path / "hotelid" / "README.md").write_text("Variant: 6 hotels, unquoted.\n")
    assert folder_description(tmp_path / "hotelid") == "6 hotels, unquoted"
    (tmp_path / "hotelid" / "README.md").write_text('# x\nVariant: "real listing photos, 6 hotels".\n')
    _, test = load_hotelid(tmp_path / "hotelid")
    assert test.meta["variant"].startswith("real listing photos, 6 hotels: 6 hotels")


def test_occlusion_augment_only_masked_pixels(fixture_2022):
    from cvbench.tasks import get_task

    train, _ = get_task("hotelid").load_splits(fixture_2022.parent)
    aug = get_task("hotelid").conditions["train_occlusion"].apply(train, "masks", 0).augment
    assert aug is not None and aug.facts["source"] == "train_masks (3 files)" and aug.p == 0.5
    x = np.random.default_rng(0).integers(20, 230, (4, 24, 32, 3), dtype=np.uint8)
    out = aug.apply(x, np.random.default_rng(1), 1.0)
    assert out.shape == x.shape and out.dtype == np.uint8
    changed = (out != x).any(-1)
    red = (out[..., 0] == 255) & (out[..., 1] == 0) & (out[..., 2] == 0)
    assert changed.any() and bool((changed == red).all())
    assert get_task("hotelid").conditions["train_occlusion"].apply(train, "none", 0).augment is None


def test_deep_cnn_and_retrieval_one_epoch(fixture_2022, tmp_path):
    """cnn and cnn-retrieval train for one epoch with masks pasted per batch (the engine's
    hook) and are scored on the clean and the occluded test set from one fit each."""
    pytest.importorskip("torch")
    from cvbench.plan import RunOptions, RunSpec, plan_runs
    from cvbench.run import run_group
    from cvbench.tasks import get_task

    task = get_task("hotelid")
    options = RunOptions(data_dir=str(fixture_2022.parent), progress=False, device="cpu", save=False)
    common = dict(model="resnet-small", width=0.25, image_size=16, epochs=1, batch_size=16,
                  optimizer="adam", lr=1e-3)
    specs = [RunSpec(m, common, conditions={"train_occlusion": "masks", "test_occlusion": te})
             for m in ("cnn", "cnn-retrieval") for te in ("none", "masks")]
    plan = plan_runs(task, specs, options, log=lambda m: None)
    assert len(plan.groups) == 2
    cnn_clean, cnn_occ = run_group(plan, plan.groups[0], plan.groups[0].runs, options)
    assert "train_used" not in cnn_clean.data  # pasted per batch, not a copy
    assert cnn_clean.data["train_augment"]["how"].startswith("per batch")
    assert cnn_occ.data["test_used"]["occlusion"]["fill"] == "red" and "test_used" not in cnn_clean.data
    assert cnn_clean.y_pred() != cnn_occ.y_pred() or cnn_clean.metrics != cnn_occ.metrics
    ret_clean, _ = run_group(plan, plan.groups[1], plan.groups[1].runs, options)
    assert ret_clean.info["retrieval"]["gallery"] == ret_clean.data["train"]["n"]


def test_map5_interval_shrinks_with_more_queries():
    from cvbench.metrics import bootstrap_mean

    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        rr = rng.choice([1.0, 0.5, 1 / 3, 0.0], size=n, p=[0.4, 0.2, 0.1, 0.3])
        lo, hi = bootstrap_mean(rr, seed=0)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_seeds_draw_the_hold_out_and_the_page_pools_them(tmp_path, fixture_2022):
    """hotelid splits by seed: two seeds = two hold-out splits (two data fingerprints); the
    2x2 cell shows the mean ± sd over them."""
    from cvbench.leaderboard import render_task
    from cvbench.plan import RunOptions, RunSpec, plan_runs
    from cvbench.results import load_records
    from cvbench.run import execute
    from cvbench.tasks import get_task

    task = get_task("hotelid")
    options = RunOptions(data_dir=str(fixture_2022.parent), progress=False)
    specs = [RunSpec("tiny-knn", {"size": 8, "k": 1}, seed=s, label="tiny",
                     conditions={"train_occlusion": "none", "test_occlusion": "none"}) for s in (0, 1)]
    plan = plan_runs(task, specs, options, log=lambda m: None)
    assert set(plan.splits) == {0, 1} and plan.data(0)[1].fingerprint != plan.data(1)[1].fingerprint
    execute(plan, options, log=lambda m: None)
    recs = load_records("hotelid")
    assert sorted(r.data["split_seed"] for r in recs) == [0, 1]
    page = render_task(task, recs, tmp_path)
    assert "seeds 0, 1" in page and "top-1" in page and " ± " in page
