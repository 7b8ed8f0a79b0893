"""Model versions in one process: vectors, staleness, blue/green, rollback, retirement."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.db import IntegrityError, connection, transaction

from catalog.models import Product
from embeddings import selectors
from embeddings.ml import DEFAULT_MODEL_VERSION
from embeddings.models import EmbeddingModel, ProductEmbedding
from embeddings.services import (
    errors,
    evaluation,
    fine_tuning,
    lifecycle,
    queue,
    registry,
    sweep,
    vectors,
)
from tests.embeddings.conftest import ProductFactory, prepare_here

pytestmark = pytest.mark.django_db


def _vectors(model: EmbeddingModel, product: Product) -> dict[str, tuple[str, list[float]]]:
    rows = ProductEmbedding.objects.filter(model=model, product=product)
    return {row.kind: (row.content_hash, list(row.vector)) for row in rows}


def _indexes(model: EmbeddingModel) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings_productembedding' "
            "AND indexname LIKE %s ORDER BY indexname",
            [f"emb\\_{model.pk}\\_%"],
        )
        return [row[0] for row in cursor.fetchall()]


def test_first_prepared_version_goes_active_with_one_partial_hnsw_index_per_kind(
    checkpoints: dict[str, str],
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")

    assert model.state == EmbeddingModel.State.ACTIVE
    assert model.dimension == 32 and len(model.weights_sha256) == 64
    assert selectors.embedding_model_active() == model
    assert _indexes(model) == [f"emb_{model.pk}_{kind}_hnsw" for kind in ("fused", "image", "text")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [f"emb_{model.pk}_image_hnsw"]
        )
        definition = cursor.fetchone()[0]
    assert "hnsw (((vector)::halfvec(32)) halfvec_cosine_ops)" in definition
    assert f"WHERE ((model_id = {model.pk}) AND ((kind)::text = 'image'::text))" in definition


def test_products_get_image_text_and_fused_vectors_and_a_repeat_is_a_no_op(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    products = [make_product() for _ in range(3)]
    ids = [p.pk for p in products]

    first = vectors.products_embed(product_ids=ids, model=model)
    again = vectors.products_embed(product_ids=ids, model=model)

    assert first.embedded == ids and not first.image_failed
    assert again.embedded == [] and again.skipped == ids
    assert ProductEmbedding.objects.filter(model=model).count() == 9
    vector = np.asarray(ProductEmbedding.objects.filter(kind="image")[0].vector)
    assert vector.shape == (32,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-2


def test_a_price_change_does_not_re_embed_and_a_title_change_does(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    product = make_product(title="Linen shirt")
    vectors.products_embed(product_ids=[product.pk], model=model)
    before = _vectors(model, product)

    product.price = Decimal("9.99")
    product.in_stock = False
    product.save()
    assert queue.products_embed_enqueue(product_ids=[product.pk]) == 0
    assert vectors.products_embed(product_ids=[product.pk], model=model).embedded == []
    assert _vectors(model, product) == before

    product.title = "Linen shirt, relaxed fit"
    product.content_hash = "f" * 64  # ingestion recomputes it for text changes
    product.save()
    assert queue.products_embed_enqueue(product_ids=[product.pk]) == 1
    assert vectors.products_embed(product_ids=[product.pk], model=model).embedded == [product.pk]
    after = _vectors(model, product)
    assert {h for h, _ in after.values()} == {"f" * 64}
    assert after["text"][1] != before["text"][1]
    assert after["image"][1] == before["image"][1]  # same photo, same image vector


def test_blue_green_backfill_keeps_search_on_the_old_version_then_switches_and_rolls_back(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    blue = prepare_here(spec=checkpoints["a"], key="blue")
    products = [make_product() for _ in range(6)]
    ids = [p.pk for p in products]
    vectors.products_embed(product_ids=ids, model=blue)
    probe = products[0]
    blue_probe = selectors.product_embedding_vector(product_id=probe.pk, kind="image")
    assert blue_probe is not None

    green = prepare_here(spec=checkpoints["b"], key="green")
    assert green.state == EmbeddingModel.State.BUILDING  # blue keeps serving
    vectors.products_embed(product_ids=ids[:3], model=green)  # half way through
    green.refresh_from_db()
    assert (green.state, green.backfill_done, green.backfill_total) == ("building", 3, 6)
    green_probe = selectors.product_embedding_vector(product_id=probe.pk, kind="image", model=green)
    assert green_probe is not None and not np.allclose(green_probe, blue_probe, atol=1e-2)

    # Search reads the active version only: blue's own vector finds itself, green's is
    # compared with blue's vectors (so it does not score ~1), and all six come back.
    hits = selectors.product_embedding_nearest(vector=blue_probe, kind="image", limit=10)
    assert hits[0].product_id == probe.pk and hits[0].score > 0.99
    assert len(hits) == 6
    with pytest.raises(errors.EmbeddingModelStateError, match="still backfilling"):
        lifecycle.embedding_model_activate(model=green)

    vectors.products_embed(product_ids=ids[3:], model=green)
    green.refresh_from_db()
    assert green.state == EmbeddingModel.State.READY and green.backfill_percent == 100

    lifecycle.embedding_model_activate(model=green)
    assert selectors.embedding_model_active() == green
    assert EmbeddingModel.objects.get(pk=blue.pk).state == EmbeddingModel.State.READY
    hits = selectors.product_embedding_nearest(vector=green_probe, kind="image", limit=3)
    assert hits[0].product_id == probe.pk and hits[0].score > 0.99

    rolled_back = lifecycle.embedding_model_rollback()
    assert rolled_back == blue and selectors.embedding_model_active() == blue
    hits = selectors.product_embedding_nearest(vector=blue_probe, kind="image", limit=1)
    assert hits[0].product_id == probe.pk and hits[0].score > 0.99

    with pytest.raises(errors.EmbeddingModelStateError, match="is active"):
        lifecycle.embedding_model_retire(model=blue)
    lifecycle.embedding_model_retire(model=green)
    assert EmbeddingModel.objects.get(pk=green.pk).state == EmbeddingModel.State.RETIRED
    assert ProductEmbedding.objects.filter(model=green).count() == 0
    assert ProductEmbedding.objects.filter(model=blue).count() == 18
    assert _indexes(green) == []
    with pytest.raises(errors.EmbeddingModelStateError, match="no previous version"):
        lifecycle.embedding_model_rollback()


def test_the_database_refuses_a_second_active_version(checkpoints: dict[str, str]) -> None:
    prepare_here(spec=checkpoints["a"], key="blue")
    green = prepare_here(spec=checkpoints["b"], key="green")

    with pytest.raises(IntegrityError), transaction.atomic():
        EmbeddingModel.objects.filter(pk=green.pk).update(state=EmbeddingModel.State.ACTIVE)


def test_deleted_and_imageless_products_are_skipped_quietly(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    kept, deleted = make_product(), make_product()
    bare = Product.objects.create(sku="NO-IMAGE", title="No photo yet", content_hash="a" * 64)
    deleted_id = deleted.pk
    deleted.delete()

    result = vectors.products_embed(product_ids=[kept.pk, deleted_id, bare.pk], model=model)

    assert result.embedded == [kept.pk]
    assert sorted(result.skipped) == sorted([deleted_id, bare.pk])


def test_a_broken_image_keeps_a_text_vector_and_is_not_retried(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    product = make_product()
    image = product.images.get()
    Path(image.image.path).write_bytes(b"not a jpeg")

    result = vectors.products_embed(product_ids=[product.pk], model=model)

    assert list(result.image_failed) == [product.pk]
    assert set(_vectors(model, product)) == {"text"}
    assert not selectors.products_needing_embedding(model=model, exclude_pending=False).exists()


def test_the_bundled_default_weights_are_found_where_ml_core_loads_them() -> None:
    # The registry decides "installed" without importing torch; the services split once
    # made it look one folder too deep, and a fresh install never went active.
    from embeddings.ml.loading import DEFAULT_MODEL_DIR

    assert registry._default_model_dir() == Path(DEFAULT_MODEL_DIR).resolve()
    assert registry._default_weights_missing() == ""


def test_a_fresh_install_without_default_weights_records_why_and_does_not_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(registry, "_default_model_dir", lambda: tmp_path / "none")

    sweep.embeddings_sweep()
    sweep.embeddings_sweep()

    (model,) = EmbeddingModel.objects.all()
    assert (model.key, model.spec, model.state) == (
        f"default-{DEFAULT_MODEL_VERSION}",
        registry.DEFAULT_SPEC,
        "failed",
    )
    assert f"default:{DEFAULT_MODEL_VERSION}" == registry.DEFAULT_SPEC
    assert "model.safetensors missing" in model.error


def test_a_fresh_install_registers_and_activates_the_bundled_default(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    from embeddings.ml import loading

    folder = Path(checkpoints["a"].removeprefix("checkpoint:"))
    monkeypatch.setattr(registry, "_default_model_dir", lambda: folder)
    monkeypatch.setitem(loading.DEFAULT_MODEL_DIRS, loading.DEFAULT_VERSION, folder)
    product = make_product()

    sweep.embeddings_sweep()
    model = EmbeddingModel.objects.get()
    assert (model.key, model.state) == (f"default-{DEFAULT_MODEL_VERSION}", "building")
    registry.embedding_model_prepare(model=model)  # what the worker does next

    model.refresh_from_db()
    assert model.state == EmbeddingModel.State.ACTIVE
    assert selectors.embedding_model_pending_count(model=model) == 1  # product queued
    vectors.products_embed(product_ids=[product.pk], model=model)
    assert ProductEmbedding.objects.filter(model=model, product=product).count() == 3


def test_a_spec_that_cannot_load_fails_with_its_reason(tmp_path: Path) -> None:
    model = prepare_here(spec=f"checkpoint:{tmp_path}", key="broken")

    assert model.state == EmbeddingModel.State.FAILED
    assert "no config.json" in model.error
    assert selectors.embedding_model_active() is None


def test_the_single_pass_item_encoder_matches_the_three_public_calls(
    checkpoints: dict[str, str],
) -> None:
    from embeddings import runtime
    from tests.factories import photo_noise

    encoder = runtime.encoder_load(checkpoints["a"])
    images = [photo_noise(seed) for seed in range(5)] + [b"not an image"]
    texts = [f"cotton dress number {n}" for n in range(6)]

    assert hasattr(encoder.model, "forward_all")
    fast = encoder.encode_all(images, texts)
    slow_images = encoder.encode_images(images)
    ok = slow_images.indices
    slow = {
        "image": slow_images.vectors,
        "text": encoder.encode_texts(texts),
        "fused": encoder.encode_items([images[i] for i in ok], [texts[i] for i in ok]).vectors,
    }

    assert fast.indices == slow_images.indices == [0, 1, 2, 3, 4]
    assert list(fast.failed) == list(slow_images.failed) == [5]
    for kind in ("image", "text", "fused"):
        np.testing.assert_allclose(getattr(fast, kind), slow[kind], atol=1e-4)


def _catalog_with_lookbooks(make_product: ProductFactory, n: int) -> list[Product]:
    from catalog.models import Lookbook, LookbookItem

    products = [make_product(title=f"Outfit piece {i}") for i in range(n)]
    for start in range(0, n, 4):
        lookbook = Lookbook.objects.create(title=f"Look {start}", slug=f"look-{start}")
        for position, product in enumerate(products[start : start + 4]):
            LookbookItem.objects.create(lookbook=lookbook, product=product, position=position)
    return products


def test_the_catalog_becomes_a_training_dataset_with_lookbooks_as_the_graph(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    products = _catalog_with_lookbooks(make_product, 8)

    dataset = evaluation.catalog_dataset()

    assert [item.item_id for item in dataset.items] == [str(p.pk) for p in products]
    assert dataset.items[0].text == "Outfit piece 0"
    assert sorted(dataset.lookbooks) == ["lookbook:look-0", "lookbook:look-4"]
    assert Path(dataset.image_file(dataset.items[0])).is_file()


def test_evaluating_a_version_stores_its_metrics(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    _catalog_with_lookbooks(make_product, 24)

    metrics = evaluation.embedding_model_evaluate(model=model)

    model.refresh_from_db()
    assert model.metrics == metrics and metrics["n_items"] == 24
    assert metrics["metrics"]  # metric name -> cell -> {value, ci_low, ci_high, n}


def test_training_on_the_catalog_registers_a_building_version(
    checkpoints: dict[str, str], make_product: ProductFactory, tmp_path: Path
) -> None:
    _catalog_with_lookbooks(make_product, 8)
    overrides = {"max_steps": 2, "image_size": 64, "embed_dim": 32, "batch_pairs": 4}

    model = fine_tuning.embedding_model_train(
        out_dir=tmp_path / "trained", key="trained", config_overrides=overrides
    )

    assert (model.key, model.state) == ("trained", EmbeddingModel.State.BUILDING)
    assert model.spec == f"checkpoint:{(tmp_path / 'trained').resolve()}"
    assert (tmp_path / "trained" / "model.safetensors").is_file()


def test_the_commands_list_backfill_switch_and_retire_versions(
    checkpoints: dict[str, str], make_product: ProductFactory
) -> None:
    import io

    from django.core.management import CommandError, call_command

    prepare_here(spec=checkpoints["a"], key="blue")
    green = prepare_here(spec=checkpoints["b"], key="green")
    products = [make_product() for _ in range(3)]

    out = io.StringIO()
    call_command("embed_catalog", stdout=out, stderr=io.StringIO())
    call_command("embed_catalog", "--model", "green", stdout=out, stderr=io.StringIO())
    assert "blue: 3 products embedded" in out.getvalue()
    assert ProductEmbedding.objects.filter(model=green).count() == 3 * len(products)

    # Neither version is evaluated on this catalog: activating needs a written reason.
    with pytest.raises(CommandError, match="green was not activated: green has not been"):
        call_command("embedding_models", "activate", "green", stdout=io.StringIO())
    out = io.StringIO()
    call_command("embedding_models", "activate", "green", "--reason", "smoke test", stdout=out)
    call_command("embedding_models", "rollback", stdout=out)
    call_command("embedding_models", "retire", "green", stdout=out)
    call_command("embedding_models", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["green is active", "blue is active again", "green retired"]
    assert any(line.startswith("blue ") and " active " in line for line in lines)


def test_an_install_serving_an_older_default_gets_the_new_one_backfilling_beside_it(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, str]
) -> None:
    from embeddings.ml import loading

    v0 = prepare_here(spec=checkpoints["a"], key="default-v0")
    EmbeddingModel.objects.filter(pk=v0.pk).update(spec="default:v0")  # an older bundled one
    folder = Path(checkpoints["b"].removeprefix("checkpoint:"))
    monkeypatch.setattr(registry, "_default_model_dir", lambda: folder)
    monkeypatch.setitem(loading.DEFAULT_MODEL_DIRS, loading.DEFAULT_VERSION, folder)

    sweep.embeddings_sweep()
    sweep.embeddings_sweep()  # a second sweep registers nothing more

    new = EmbeddingModel.objects.get(spec=registry.DEFAULT_SPEC)
    assert (new.key, new.state, new.auto_activate) == (
        f"default-{DEFAULT_MODEL_VERSION}",
        "building",
        False,
    )
    registry.embedding_model_prepare(model=new)
    new.refresh_from_db()
    # An empty catalog is backfilled at once: ready (a rollback-style standby), not served.
    assert new.state == EmbeddingModel.State.READY
    assert selectors.embedding_model_active() == v0  # the old one serves until activated
    assert EmbeddingModel.objects.count() == 2

    lifecycle.embedding_model_retire(model=new)
    sweep.embeddings_sweep()  # an operator retired it: not registered again
    assert EmbeddingModel.objects.filter(spec=registry.DEFAULT_SPEC).count() == 1


def test_the_migration_names_existing_default_rows_v1() -> None:
    from importlib import import_module

    from django.apps import apps

    migration = import_module("embeddings.migrations.0004_default_spec_names_its_version")
    EmbeddingModel.objects.create(key="default-v1", spec="default")
    EmbeddingModel.objects.create(key="clip-v1", spec="open_clip:ViT-B-32:random")

    migration.name_v1(apps, None)

    assert dict(EmbeddingModel.objects.values_list("key", "spec")) == {
        "default-v1": "default:v1",
        "clip-v1": "open_clip:ViT-B-32:random",
    }
