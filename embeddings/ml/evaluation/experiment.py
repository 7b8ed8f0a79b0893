"""The three-model comparison behind each report: base, image-text only, full objective.

``run_experiment(ExperimentConfig(...))`` makes (or reloads) the split, fine-tunes two
variants from the same base with the same seed and budget on the *training view* of the
dataset (cold items and held-out lookbooks removed, see ``training_dataset``), evaluates all
three with ``evaluate`` and writes the report. ``run_default_model_report`` evaluates the
bundled default model on the clothing photos its recipe held out.

torch and the trainer are imported only here (and only when called), so the metric code
stays importable without them. One module over 400 lines: the experiment and the
default model's report share its split, training-view and report-writing steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from embeddings.ml.evaluation.catalog import as_catalog
from embeddings.ml.evaluation.evaluate import (
    EvalConfig,
    EvaluationResult,
    cooccurrence_baseline,
    evaluate,
)
from embeddings.ml.evaluation.report import ModelRun, ReportMeta, write_report
from embeddings.ml.evaluation.splits import Split, dataset_fingerprint, make_split

log = logging.getLogger(__name__)

# Which lookbooks may be held out, per dataset: ikea rooms; hm colour-variant groups (the
# "section:" groups of up to 1,100 articles stay in the graph); clothing senders' boards.
LOOKBOOK_PREFIX = {"ikea": "room:", "hm": "product:", "clothing": "sender:"}


def datasets_root(cli_value: str | None = None) -> Path:
    """The shared datasets directory: the argument, else $VITRINE_DATASETS, else
    ``../shared/datasets`` (relative to the working directory)."""
    return Path(cli_value or os.environ.get("VITRINE_DATASETS") or "../shared/datasets")


def load_named_dataset(name: str, root: Path) -> Any:
    """Load ``name`` (clothing | hm | ikea) from ``root/name`` with the model package's loader."""
    from embeddings.ml.data import LOADERS

    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    # Absolute: load_ikea stores item paths that already include its argument *and* sets
    # image_root to it, so a relative root would be joined twice by ItemDataset.image_file.
    return LOADERS[name]((root / name).resolve())


def training_dataset(dataset: Any, split: Split) -> Any:
    """The part of ``dataset`` (an ``ItemDataset``) that training may see.

    Returns a new ``ItemDataset``: cold items removed, held-out lookbooks removed, cold
    items removed from the remaining lookbooks (those left with < 2 members dropped), and
    no scene queries.
    """
    from embeddings.ml.data import ItemDataset

    split.check(as_catalog(dataset))
    keep = set(split.training_item_ids(it.item_id for it in dataset.items))
    return ItemDataset(
        name=dataset.name,
        items=[it for it in dataset.items if it.item_id in keep],
        lookbooks=split.training_lookbooks(dataset.lookbooks),
        image_root=dataset.image_root,
        queries=[],
        licence=dataset.licence,
    )


def sample_dataset(dataset: Any, n_items: int, seed: int, group_prefix: str = "") -> Any:
    """A seeded sample of about ``n_items`` items of an ``ItemDataset``, whole groups at a time.

    Groups are the lookbooks named ``group_prefix...`` (hm: "product:", the colour variants
    of one product) plus every other item on its own; groups are shuffled with ``seed`` and
    taken until ``n_items`` is reached, so a sampled product keeps all its variants. Returns
    ``dataset.subset(...)`` (lookbooks shrink to the sample, size >= 2). Used to fit an
    experiment into a CPU budget; the report says so.
    """
    import numpy as np

    if n_items >= len(dataset.items):
        return dataset
    units: list[list[str]] = []
    grouped: set[str] = set()
    if group_prefix:
        for lid in sorted(dataset.lookbooks):
            if lid.startswith(group_prefix):
                members = [i for i in dataset.lookbooks[lid] if i not in grouped]
                if members:
                    units.append(members)
                    grouped.update(members)
    units += [[it.item_id] for it in dataset.items if it.item_id not in grouped]
    order = np.random.default_rng(seed).permutation(len(units))
    chosen: list[str] = []
    for j in order:
        if len(chosen) >= n_items:
            break
        chosen += units[j]
    return dataset.subset(chosen, dataset.name)


def split_from_heldout(catalog: Any, heldout_ids: set[str], name: str, seed: int) -> Split:
    """A ``Split`` whose cold items are ``heldout_ids`` and whose held-out lookbooks are the
    lookbooks made only of them (how the default model's recipe holds out whole boards)."""
    cat = as_catalog(catalog)
    held_lbs = sorted(
        lid for lid, members in cat.lookbooks.items() if members and set(members) <= heldout_ids
    )
    return Split(
        dataset=name,
        seed=seed,
        cold_fraction=round(len(heldout_ids) / max(1, len(cat.items)), 4),
        heldout_lookbook_fraction=round(len(held_lbs) / max(1, len(cat.lookbooks)), 4),
        cold_items=tuple(sorted(heldout_ids)),
        heldout_lookbooks=tuple(held_lbs),
        n_items=len(cat.items),
        n_lookbooks=len(cat.lookbooks),
        fingerprint=dataset_fingerprint(cat),
    )


def hardware_summary(threads: int | None) -> str:
    """One line: CPU, cores, torch threads, GPU or not, load average at the time."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} CPU cores (shared; load {load:.1f} at start), "
        f"torch {torch.__version__} with {threads or torch.get_num_threads()} threads, {gpu}"
    )


def _split_summary(split: Split, path: Path) -> dict[str, Any]:
    return {
        "seed": split.seed,
        "items": split.n_items,
        "cold_items": len(split.cold_items),
        "lookbooks": split.n_lookbooks,
        "heldout_lookbooks": len(split.heldout_lookbooks),
        "fingerprint": split.fingerprint,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "path": str(path),
    }


@dataclass
class ExperimentConfig:
    """One reproducible three-model experiment (defaults: the committed reports' budget)."""

    dataset: str  # clothing | hm | ikea
    data_root: Path  # directory holding <dataset>/
    out: Path  # report directory (committed)
    work_dir: Path  # split + checkpoints (never committed)
    base: str = "default:v2"  # load_model spec every variant starts from (CATALOG_BASE)
    seed: int = 0  # split, training and evaluation
    epochs: float = 10.0  # fine-tuning budget per variant (passes over training items)
    max_steps: int | None = None  # overrides epochs (smoke runs)
    threads: int = 2  # torch CPU threads for encoding (training runs the recipe's)
    cold_fraction: float = 0.2
    heldout_lookbook_fraction: float = 0.25
    lr: float = 1e-3  # fusion module, category head
    lr_pretrained: float = 3e-4  # the base's projections (its trunks stay frozen)
    batch_pairs: int = 64  # neighbour pairs per step (a step sees twice as many items)
    fusion_pairs: int | None = 16  # pairs of a step that are fused (CATALOG_FINE_TUNE)
    feature_views: int = 2  # cached trunk views per photo (CATALOG_FINE_TUNE)
    ablations: bool = False  # also train: no fusion training, no neighbour, no category
    w_neighbour: float = 0.5  # full objective only
    w_category: float = 0.5  # full objective only
    sample_items: int | None = None  # evaluate and train on a seeded sample of the catalog
    reuse_checkpoints: bool = True  # skip training a variant whose checkpoint exists
    eval: EvalConfig = field(default_factory=EvalConfig)
    command: str = ""  # the command line, quoted in the report


def _previous_training(out_dir: Path) -> dict[str, Any] | None:
    """The training section of a finished checkpoint's config.json, or None."""
    path = out_dir / "config.json"
    if not path.is_file():
        return None
    info: dict[str, Any] = json.loads(path.read_text()).get("training", {})
    return info


# Fields that must match for a stored checkpoint to stand for this run.
_RECIPE_FIELDS = (
    "init",
    "w_clip",
    "w_neighbour",
    "w_category",
    "epochs",
    "max_steps",
    "lr",
    "lr_pretrained",
    "batch_pairs",
    "fusion_pairs",
    "feature_views",
    "train_fusion",
    "seed",
)


def _same_recipe(stored: dict[str, Any], config: Any) -> bool:
    return all(stored.get(f) == getattr(config, f) for f in _RECIPE_FIELDS)


@dataclass(frozen=True)
class Variant:
    """One fine-tuned model of an experiment: which objectives, whether fusion trains."""

    label: str
    w_neighbour: float
    w_category: float
    train_fusion: bool = True


def variants(cfg: ExperimentConfig) -> list[Variant]:
    """image-text only and the full objective; with ``cfg.ablations`` the full objective
    less one component each (the fusion module's training, the neighbour term, the
    category term)."""
    wn, wc = cfg.w_neighbour, cfg.w_category
    out = [Variant("image-text", 0.0, 0.0), Variant("full", wn, wc)]
    if cfg.ablations:
        out += [
            Variant("full, fusion frozen", wn, wc, train_fusion=False),
            Variant("full, no neighbour", 0.0, wc),
            Variant("full, no category", wn, 0.0),
        ]
    return out


def _train_variant(
    cfg: ExperimentConfig, train_ds: Any, variant: Variant
) -> tuple[str, dict[str, Any]]:
    from dataclasses import replace

    from embeddings.ml.recipes import CATALOG_FINE_TUNE
    from embeddings.ml.train import run_training
    from embeddings.ml.train_config import TrainConfig

    label, w_neighbour, w_category = variant.label, variant.w_neighbour, variant.w_category
    out_dir = cfg.work_dir / label.replace(", ", "-").replace(" ", "-")
    # The catalog fine-tune's recipe (frozen trunks, cached features), the experiment's
    # budget and weights on top: what a retailer's "Fine-tune on this catalog" runs.
    tc = replace(
        TrainConfig(init=cfg.base),
        **CATALOG_FINE_TUNE,
    )
    tc = replace(
        tc,
        w_clip=1.0,
        w_neighbour=w_neighbour,
        w_category=w_category,
        train_fusion=variant.train_fusion,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr=cfg.lr,
        lr_pretrained=cfg.lr_pretrained,
        batch_pairs=cfg.batch_pairs,
        fusion_pairs=cfg.fusion_pairs,
        feature_views=cfg.feature_views,
        feature_cache_dir=str(cfg.work_dir / "features"),
        checkpoint_every=250,
        seed=cfg.seed,
        decode_workers=cfg.threads,
    )  # threads: the recipe's (one for the steps; the trunks' caching uses every core)
    objectives = "image-text" + (" + neighbour" if w_neighbour else "")
    objectives += " + category" if w_category else ""
    objectives += "" if variant.train_fusion else " (fusion frozen)"
    summary: dict[str, Any] = {
        "objectives": objectives,
        "w_clip": 1.0,
        "w_neighbour": w_neighbour,
        "w_category": w_category,
        "epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "lr": cfg.lr,
        "lr_pretrained": cfg.lr_pretrained,
        "batch_pairs": cfg.batch_pairs,
        "fusion_pairs": cfg.fusion_pairs,
        "feature_views": cfg.feature_views,
        "init": cfg.base,
        "n_train_items": len(train_ds.items),
        "n_train_lookbooks": len(train_ds.lookbooks),
    }
    info = _previous_training(out_dir)
    if info and not (cfg.reuse_checkpoints and _same_recipe(info.get("train_config", {}), tc)):
        log.info("%s: removing %s (other recipe or --retrain)", label, out_dir)
        shutil.rmtree(out_dir)
        info = None
    if info:
        summary.update(
            steps=info.get("steps"),
            seconds=info.get("train_seconds_this_call"),
            final_loss=info.get("final_losses"),
            reused=True,
        )
        log.info("%s: reusing checkpoint %s", label, out_dir)
        return f"checkpoint:{out_dir}", summary
    log.info("%s: training %s", label, objectives)
    result = run_training(tc, train_ds, out_dir)
    summary.update(
        steps=result.steps,
        seconds=round(result.seconds, 1),
        final_loss={k: round(v, 4) for k, v in result.last_losses.items()},
    )
    return f"checkpoint:{result.out_dir}", summary


def _evaluate_spec(
    spec: str, label: str, dataset: Any, split: Split, cfg: ExperimentConfig
) -> tuple[EvaluationResult, str]:
    """Evaluate one spec; returns the result and the weights' sha256 (16 hex digits)."""
    from embeddings.ml.loading import load_encoder

    # ONNX Runtime: several times faster than PyTorch eager for the EfficientNet trunk.
    encoder = load_encoder(spec, device="cpu", onnx_dir=cfg.work_dir / "onnx")
    try:
        result = evaluate(encoder, dataset, split, cfg.eval, model_name=label)
        return result, str(getattr(encoder, "weights_sha256", "") or "?")[:16]
    finally:
        close = getattr(encoder, "close", None)
        if callable(close):
            close()


def run_experiment(cfg: ExperimentConfig) -> Path:
    """Split, train both variants, evaluate the three models, write the report.

    Returns the README path of the report.
    """
    import torch

    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("VITRINE_TORCH_THREADS", str(cfg.threads))
    started = time.monotonic()
    hardware = hardware_summary(cfg.threads)
    dataset = load_named_dataset(cfg.dataset, cfg.data_root)
    n_full = len(dataset.items)
    if cfg.sample_items:
        dataset = sample_dataset(
            dataset, cfg.sample_items, cfg.seed, LOOKBOOK_PREFIX.get(cfg.dataset, "")
        )
    catalog = as_catalog(dataset)
    split_path = cfg.work_dir / "split.json"
    split = make_split(
        catalog,
        cfg.seed,
        cold_fraction=cfg.cold_fraction,
        heldout_lookbook_fraction=cfg.heldout_lookbook_fraction,
        lookbook_prefix=LOOKBOOK_PREFIX.get(cfg.dataset, ""),
    )
    if split_path.is_file() and Split.load(split_path) != split:
        raise RuntimeError(f"{split_path} differs from the split this config makes; remove it")
    split.save(split_path)
    train_ds = training_dataset(dataset, split)
    log.info(
        "%s: %d items (%d cold), %d lookbooks (%d held out); training on %d items, %d lookbooks",
        cfg.dataset,
        split.n_items,
        len(split.cold_items),
        split.n_lookbooks,
        len(split.heldout_lookbooks),
        len(train_ds.items),
        len(train_ds.lookbooks),
    )
    specs: list[tuple[str, str, dict[str, Any] | None]] = [("base", cfg.base, None)]
    for variant in variants(cfg):
        spec, trained = _train_variant(cfg, train_ds, variant)
        specs.append((variant.label, spec, trained))
    runs = []
    for label, spec, training in specs:
        log.info("evaluating %s (%s)", label, spec)
        result, sha = _evaluate_spec(spec, label, dataset, split, cfg)
        runs.append(ModelRun(label, f"{spec} (weights sha256 {sha})", result, training))
    if split.heldout_lookbooks:
        runs.append(
            ModelRun(
                "co-occurrence",
                "count of shared training lookbooks with the query's items (no model)",
                cooccurrence_baseline(dataset, split, cfg.eval),
            )
        )
    budget = (
        f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs:g} epochs"
    ) + f" per fine-tuned variant, all from `{cfg.base}`, seed {cfg.seed}; wall-clock "
    budget += f"{(time.monotonic() - started) / 60:.1f} min for the whole experiment"
    meta = ReportMeta(
        title=f"{cfg.dataset}: base vs image-text vs full objective (cold/warm)",
        dataset=cfg.dataset,
        command=cfg.command,
        seed=cfg.seed,
        budget=budget,
        hardware=hardware,
        split=_split_summary(split, split_path),
        notes=[
            f"Cold items ({cfg.cold_fraction:.0%}, stratified by lookbook membership) were "
            "never trained on; held-out lookbooks "
            f"({cfg.heldout_lookbook_fraction:.0%} of those with prefix "
            f"'{LOOKBOOK_PREFIX.get(cfg.dataset, '')}') were not in the neighbour graph. "
            "Lookbook completion, fill-in-the-blank and shop-the-look use only held-out "
            "lookbooks; a query's cell is its target item's.",
            "Galleries are the whole catalog, ranked as the search app ranks them: "
            "lookbook completion and FITB on fused item vectors (like 'complete the look'), "
            "shop-the-look with the scene photo against product image vectors (like a "
            "photo query); text/image retrieval uses the towers' own vectors.",
            f"Evaluation config: {cfg.eval}.",
            "Fine-tuning recipe: the catalog fine-tune's (`embeddings.ml.recipes`): both "
            "trunks frozen and run once (image: centre crop + "
            f"{cfg.feature_views - 1} augmented view(s) per photo), projections and fusion "
            f"trained on the cached outputs; {cfg.batch_pairs} pairs a step, the first "
            f"{cfg.fusion_pairs} of them fused.",
            "co-occurrence: no model; lookbook completion ranks items by how often they share "
            "a training lookbook with the query's items (random order among ties; a cold "
            "item shares none, so it ranks below every item that shares one). Same queries "
            "as the models.",
            "complete_the_look: the search app's order for the same queries "
            "(`embeddings.ml.look_ranking.look_order`, "
            f"{cfg.eval.look_ranking}): the share of training lookbooks an item shares "
            "with the query's items plus model_weight times the model's fused cosine "
            "(mapped to 0..1), and places 2 and 7 kept for the best items no training "
            "lookbook holds (every cold item is one). The co-occurrence column is counting "
            "alone (random order within a count); the section 'Complete the look vs "
            "co-occurrence' pairs the two query by query. The model weight was chosen on "
            "validation rooms cut from the training rooms "
            "(bench/results/complete_the_look_fit.json), never on these.",
            *(
                [
                    f"Catalog: a seeded sample (seed {cfg.seed}) of {len(dataset.items)} of "
                    f"the {n_full} items, whole '{LOOKBOOK_PREFIX.get(cfg.dataset, '')}' "
                    "groups at a time, to fit the CPU budget; training and evaluation both "
                    "use only the sample."
                ]
                if cfg.sample_items
                else []
            ),
        ],
    )
    return write_report(cfg.out, runs, meta)


def run_default_model_report(
    data_root: Path,
    out: Path,
    command: str,
    threads: int = 2,
    eval_config: EvalConfig | None = None,
) -> Path:
    """Evaluate the bundled default model on the clothing photos its recipe held out.

    The held-out part is rebuilt exactly as ``embeddings.ml.default_recipe`` makes it (whole
    senders, seed 0); those photos form the cold cell and their boards the held-out
    lookbooks. An untrained model of the same architecture is evaluated beside it as the
    chance-level reference. Returns the README path.
    """
    import torch

    from embeddings.ml.default_recipe import (
        DEFAULT_CONFIG,
        HOLDOUT_FRACTION,
        MAX_SENDER_SHARE,
    )
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.train import new_model

    torch.set_num_threads(threads)
    os.environ.setdefault("VITRINE_TORCH_THREADS", str(threads))
    eval_config = eval_config or EvalConfig(other_lookbooks_precision=True)
    started = time.monotonic()
    hardware = hardware_summary(threads)
    dataset = load_named_dataset("clothing", data_root)
    _, held = dataset.split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    split = split_from_heldout(dataset, {it.item_id for it in held.items}, "clothing", seed=0)
    work = Path(os.environ.get("VITRINE_DATA_DIR", ".data")) / "experiments" / "default_model"
    split_path = split.save(work / "split.json")
    runs = []
    encoder = Encoder(new_model(replace(DEFAULT_CONFIG, seed=0)), device="cpu")
    runs.append(
        ModelRun(
            "untrained",
            "new:resnet10t (random image tower, same recipe, no training)",
            evaluate(encoder, dataset, split, eval_config, model_name="untrained"),
        )
    )
    from embeddings.ml.loading import load_encoder

    default = load_encoder("default", device="cpu")
    runs.append(
        ModelRun(
            "default",
            f"default (weights sha256 {getattr(default, 'weights_sha256', '?')[:16]})",
            evaluate(default, dataset, split, eval_config, model_name="default"),
        )
    )
    meta = ReportMeta(
        title="Default model on the held-out clothing senders",
        dataset="clothing",
        command=command,
        seed=0,
        budget=f"evaluation only; {(time.monotonic() - started) / 60:.1f} min",
        hardware=hardware,
        split=_split_summary(split, split_path),
        notes=[
            "Cold = the photos of the senders the default recipe held out "
            f"({HOLDOUT_FRACTION:.0%} of photos as whole senders, seed 0); warm = the "
            "training photos (the model saw them: warm figures measure fit, not "
            "generalisation). All held-out lookbooks are wholly cold, so lookbook tasks "
            "have no warm cell.",
            "Clothing's only text is the label ('a photo of a t-shirt'): text->image "
            "instance recall is bounded by ties between photos of one label; "
            "text->image category precision is the meaningful text figure.",
            "Senders' boards share backdrop and lighting: lookbook completion on boards "
            "can be solved by backdrop alone, so it overstates style understanding.",
            "The untrained row is the same architecture with a random image tower (its "
            "MiniLM text trunk is pretrained): the chance-level reference.",
            f"Evaluation config: {eval_config}.",
        ],
        baseline_label="untrained",
        candidate_label="default",
        check_target=False,
    )
    return write_report(out, runs, meta)
