"""The model-version admin through the Django test client: train, compare, activate, roll back.

Versions are real (tiny checkpoints prepared in this process). Training and evaluation run
on a worker, so what the admin promises for them is a message on the broker: the tests
read it off the real Redis queue, without a worker that would start a training run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from catalog.models import Product
from embeddings import selectors
from embeddings.ml.recipes import CATALOG_FINE_TUNE
from embeddings.models import EmbeddingModel, ProductEmbedding, TrainingJob
from embeddings.services.lifecycle import embedding_model_activate, embedding_model_retire
from embeddings.services.vectors import products_embed
from tests.embeddings.conftest import ProductFactory, SentTask, TaskQueue, prepare_here

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:embeddings_embeddingmodel_changelist")
TRAIN = reverse("admin:embeddings_train")
ROLLBACK = reverse("admin:embeddings_rollback")
COMPARE = reverse("admin:embeddings_compare")
TRAIN_TASK = "embeddings.tasks.training_job_run_task"
EVALUATE_TASK = "embeddings.tasks.embedding_model_evaluate_task"


@pytest.fixture
def admin_client() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(user)
    return client


@dataclass(frozen=True)
class Versions:
    blue: EmbeddingModel  # active, every product embedded
    green: EmbeddingModel  # prepared, backfill not started: still building


@pytest.fixture
def versions(checkpoints: dict[str, str], make_product: ProductFactory) -> Versions:
    blue = prepare_here(spec=checkpoints["a"], key="blue")
    product = make_product()
    products_embed(product_ids=[product.pk], model=blue)
    green = prepare_here(spec=checkpoints["b"], key="green")
    assert (blue.state, green.state) == ("active", "building")
    return Versions(blue=blue, green=green)


def green_backfilled(versions: Versions) -> EmbeddingModel:
    """Finish green's backfill (it becomes `ready`, activatable); return it."""
    product_ids = list(Product.objects.values_list("pk", flat=True))
    products_embed(product_ids=product_ids, model=versions.green)
    versions.green.refresh_from_db()
    assert versions.green.state == EmbeddingModel.State.READY
    return versions.green


def states() -> dict[str, str]:
    return dict(EmbeddingModel.objects.values_list("key", "state"))


def messages_of(response: HttpResponse) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, *models: EmbeddingModel) -> HttpResponse:
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(m.pk) for m in models]}
    )


def metrics(recall: float, ndcg: float) -> dict[str, Any]:
    """An evaluation as `embedding_model_evaluate` stores it (`EvaluationResult.to_dict`)."""
    return {
        "metrics": {
            "lookbook_completion/recall@10": {
                "all": {"value": recall, "ci_low": recall - 0.05, "ci_high": recall + 0.05, "n": 40}
            },
            "text_to_image/ndcg@10": {
                "all": {"value": ndcg, "ci_low": ndcg - 0.1, "ci_high": ndcg + 0.1, "n": 40}
            },
        }
    }


def compare_rows(page: str) -> dict[str, list[tuple[str, bool]]]:
    """The comparison table: metric -> one (shown value, marked best) per version column."""
    rows = {}
    for tr in re.findall(r"<tr><td>.*?</tr>", page, flags=re.S):
        metric, _cell, *cells = re.findall(r"<td([^>]*)>(.*?)</td>", tr, flags=re.S)
        rows[metric[1]] = [
            (re.sub(r"<span class=\"vt-bar\".*?</span>", "", text), "vt-best" in attrs)
            for attrs, text in cells
        ]
    return rows


# ---- the list and its tools ---------------------------------------------------------------
def test_the_version_list_shows_each_version_its_state_and_the_tools(
    admin_client: Client, versions: Versions
) -> None:
    page = admin_client.get(CHANGELIST).content.decode()

    assert '<span class="vt-status vt-status--active">Active</span>' in page
    assert '<span class="vt-status vt-status--building">Building</span>' in page
    assert ">blue</a>" in page and ">green</a>" in page
    assert f'href="{TRAIN}"' in page and f'href="{COMPARE}"' in page
    assert f'action="{ROLLBACK}"' in page
    for action in ("activate", "evaluate", "compare", "retire"):
        assert f'<option value="{action}">' in page


# ---- fine-tune ------------------------------------------------------------------------------
def test_the_fine_tune_page_offers_the_active_version_as_base_a_key_and_steps(
    admin_client: Client, versions: Versions
) -> None:
    response = admin_client.get(TRAIN)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Fine-tune on this catalog" in page
    base = re.escape(versions.blue.spec)
    assert re.search(rf'<input type="text" name="base" value="{base}"[^>]*required', page)
    assert 'name="key"' in page and 'name="max_steps"' in page and "Start fine-tuning" in page


def test_without_a_version_of_its_own_the_fine_tune_page_offers_the_bundled_v2(
    admin_client: Client,
) -> None:
    from embeddings.ml.recipes import CATALOG_BASE

    page = admin_client.get(TRAIN).content.decode()

    assert CATALOG_BASE == "default:v2"
    assert re.search(r'<input type="text" name="base" value="default:v2"[^>]*required', page)


def test_fine_tuning_with_a_bad_form_shows_the_errors_and_queues_nothing(
    admin_client: Client, embeddings_queue: TaskQueue
) -> None:
    response = admin_client.post(TRAIN, {"base": "", "key": "not a slug!", "max_steps": "0"})

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["base"] == ["This field is required."]
    assert "slug" in errors["key"][0]
    assert errors["max_steps"]
    assert embeddings_queue.take_all() == []
    assert not TrainingJob.objects.exists()


def test_fine_tuning_creates_a_job_queues_it_and_shows_its_page(
    admin_client: Client,
    embeddings_queue: TaskQueue,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The run is sent once the request's writes are committed (the test's transaction
    # never commits: run the callbacks it collected, as a commit would).
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            TRAIN, {"base": "default", "key": "autumn", "max_steps": "300"}
        )

    job = TrainingJob.objects.get()
    assert (job.base, job.key, job.config, job.state) == (
        "default", "autumn", {**CATALOG_FINE_TUNE, "max_steps": 300}, "queued"
    )  # fmt: skip
    assert job.out_dir == str(settings.DATA_DIR / "models" / "autumn")
    page_url = reverse("admin:embeddings_trainingjob_change", args=[job.pk])
    assert response.status_code == 302 and response["Location"] == page_url
    assert embeddings_queue.take_all() == [SentTask(TRAIN_TASK, {"job_id": job.pk})]
    page = admin_client.get(page_url).content.decode()
    assert 'data-testid="training-state">Queued<' in page
    assert "Waiting for the training worker" in page
    assert 'data-testid="training-cancel"' in page
    assert not EmbeddingModel.objects.exists()  # registered by the worker when it finishes


def test_fine_tuning_without_a_key_names_its_folder_by_the_time(
    admin_client: Client,
    embeddings_queue: TaskQueue,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(TRAIN, {"base": "new:resnet10t", "key": ""})

    job = TrainingJob.objects.get()
    assert job.key == "" and job.base == "new:resnet10t" and job.config == CATALOG_FINE_TUNE
    folder = job.out_dir.removeprefix(f"{settings.DATA_DIR / 'models'}/")
    assert re.fullmatch(r"catalog-\d{8}-\d{6}-\d{6}", folder)


def test_fine_tuning_under_a_key_already_taken_is_refused_by_the_form(
    admin_client: Client, embeddings_queue: TaskQueue, versions: Versions
) -> None:
    response = admin_client.post(TRAIN, {"base": "default", "key": "blue"})

    assert embeddings_queue.take_all() == []
    assert response.status_code == 200 and response.context["form"].errors["key"]


# ---- roll back -----------------------------------------------------------------------------
def test_rolling_back_re_activates_the_version_that_was_active_before(
    admin_client: Client, versions: Versions
) -> None:
    embedding_model_activate(model=green_backfilled(versions))
    assert states() == {"blue": "ready", "green": "active"}

    response = admin_client.post(ROLLBACK)

    assert response.status_code == 302 and response["Location"] == CHANGELIST
    assert states() == {"blue": "active", "green": "ready"}
    assert selectors.embedding_model_active() == versions.blue
    assert messages_of(response) == [("success", "Rolled back: blue is active.")]


def test_rolling_back_with_no_previous_version_says_so_and_changes_nothing(
    admin_client: Client, versions: Versions
) -> None:
    response = admin_client.post(ROLLBACK)

    assert response.status_code == 302
    assert states() == {"blue": "active", "green": "building"}
    assert messages_of(response) == [
        ("error", "no previous version to roll back to (retired or none)")
    ]


def test_a_get_of_the_rollback_url_only_goes_back_to_the_list(
    admin_client: Client, versions: Versions
) -> None:
    embedding_model_activate(model=green_backfilled(versions))

    response = admin_client.get(ROLLBACK)

    assert response.status_code == 302 and response["Location"] == CHANGELIST
    assert states() == {"blue": "ready", "green": "active"}


# ---- compare -------------------------------------------------------------------------------
def test_compare_shows_both_versions_metrics_side_by_side_with_the_best_marked(
    admin_client: Client, versions: Versions
) -> None:
    EmbeddingModel.objects.filter(pk=versions.blue.pk).update(metrics=metrics(0.412, 0.733))
    EmbeddingModel.objects.filter(pk=versions.green.pk).update(metrics=metrics(0.538, 0.701))

    redirect = run_action(admin_client, "compare", versions.green, versions.blue)
    assert redirect.status_code == 302
    assert redirect["Location"].startswith(f"{COMPARE}?ids=")
    response = admin_client.get(redirect["Location"])

    page = response.content.decode()
    assert response.status_code == 200 and 'data-testid="compare"' in page
    assert page.index(">blue<br>") < page.index(">green<br>")  # oldest first
    rows = compare_rows(page)
    assert rows["lookbook_completion/recall@10"] == [
        ("0.412 <small>[0.362, 0.462]</small>", False),
        ("0.538 <small>[0.488, 0.588]</small>", True),
    ]
    assert rows["text_to_image/ndcg@10"] == [
        ("0.733 <small>[0.633, 0.833]</small>", True),
        ("0.701 <small>[0.601, 0.801]</small>", False),
    ]


def test_compare_without_a_selection_shows_the_evaluated_versions_only(
    admin_client: Client, versions: Versions
) -> None:
    EmbeddingModel.objects.filter(pk=versions.green.pk).update(metrics=metrics(0.5, 0.6))

    page = admin_client.get(COMPARE).content.decode()

    assert ">green<br>" in page and ">blue<br>" not in page
    assert "0.500" in page and "0.600" in page


def test_compare_with_nothing_evaluated_explains_how_to_evaluate(
    admin_client: Client, versions: Versions
) -> None:
    response = admin_client.get(COMPARE)

    assert response.status_code == 200
    assert "No version has an evaluation yet" in response.content.decode()


# ---- actions -------------------------------------------------------------------------------
def activate_page(client: Client, model: EmbeddingModel, reason: str = "") -> HttpResponse:
    return client.post(reverse("admin:embeddings_activate", args=[model.pk]), {"reason": reason})


def test_the_activate_action_opens_the_version_s_activation_page(
    admin_client: Client, versions: Versions
) -> None:
    response = run_action(admin_client, "activate", versions.green)

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:embeddings_activate", args=[versions.green.pk])
    assert states() == {"blue": "active", "green": "building"}


def test_activating_a_version_still_backfilling_is_refused_and_changes_nothing(
    admin_client: Client, versions: Versions
) -> None:
    response = activate_page(admin_client, versions.green, reason="try it")

    assert response.status_code == 200
    assert response.context["form"].errors["reason"] == [
        "green is still backfilling (0/1); wait, or force the activation"
    ]
    assert states() == {"blue": "active", "green": "building"}


def test_activating_a_retired_version_is_refused_and_changes_nothing(
    admin_client: Client, versions: Versions
) -> None:
    embedding_model_retire(model=versions.green)

    response = activate_page(admin_client, versions.green, reason="try it")

    assert response.context["form"].errors["reason"] == ["green is retired; cannot activate it"]
    assert states() == {"blue": "active", "green": "retired"}


def test_a_version_not_evaluated_is_activated_only_with_a_reason_which_is_recorded(
    admin_client: Client, versions: Versions
) -> None:
    green_backfilled(versions)

    refused = activate_page(admin_client, versions.green)

    (error,) = refused.context["form"].errors["reason"]
    assert error.startswith("green was not activated: green has not been evaluated")
    assert states() == {"blue": "active", "green": "ready"}

    response = activate_page(admin_client, versions.green, reason="Autumn launch, checked by eye")

    assert response.status_code == 302
    assert messages_of(response) == [("success", "green is now active.")]
    assert states() == {"blue": "ready", "green": "active"}
    versions.green.refresh_from_db()
    assert "by admin: Autumn launch, checked by eye" in versions.green.activation_reason


def held_out(recall: float) -> dict[str, Any]:
    """An evaluation on the catalog's held-out split (one fingerprint for every version)."""
    cell = {"value": recall, "ci_low": recall - 0.05, "ci_high": recall + 0.05, "n": 40}
    return {
        "split_fingerprint": "catalog-split",
        "metrics": {"lookbook_completion/recall@10": {"cold": cell}},
    }


def test_a_version_that_beats_the_active_one_is_activated_without_a_reason(
    admin_client: Client, versions: Versions
) -> None:
    green_backfilled(versions)
    EmbeddingModel.objects.filter(key="blue").update(metrics=held_out(0.61))
    EmbeddingModel.objects.filter(key="green").update(metrics=held_out(0.78))

    page = admin_client.get(reverse("admin:embeddings_activate", args=[versions.green.pk]))
    text = page.content.decode()
    assert "61% → 78%" in text
    assert "finds the other products of a new product&#x27;s lookbook or variant group" in text

    response = activate_page(admin_client, versions.green)

    assert messages_of(response) == [("success", "green is now active.")]
    assert states() == {"blue": "ready", "green": "active"}
    versions.green.refresh_from_db()
    assert versions.green.activation_reason == ""


def test_a_version_that_does_not_beat_the_active_one_needs_a_reason(
    admin_client: Client, versions: Versions
) -> None:
    green_backfilled(versions)
    EmbeddingModel.objects.filter(key="blue").update(metrics=held_out(0.61))
    EmbeddingModel.objects.filter(key="green").update(metrics=held_out(0.55))

    refused = activate_page(admin_client, versions.green)

    (error,) = refused.context["form"].errors["reason"]
    assert "does not beat blue" in error and "61% → 55%" in error
    assert states() == {"blue": "active", "green": "ready"}


def test_activate_needs_exactly_one_version(admin_client: Client, versions: Versions) -> None:
    green_backfilled(versions)

    response = run_action(admin_client, "activate", versions.blue, versions.green)

    assert messages_of(response) == [("error", "Select exactly one version to activate.")]
    assert states() == {"blue": "active", "green": "ready"}


def test_evaluate_queues_one_evaluation_per_selected_version(
    admin_client: Client,
    versions: Versions,
    embeddings_queue: TaskQueue,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "evaluate", versions.blue, versions.green)

    assert messages_of(response) == [("info", "Evaluation queued for 2 version(s).")]
    sent = embeddings_queue.take_all()
    assert sorted(s.kwargs["model_id"] for s in sent) == sorted(
        [versions.blue.pk, versions.green.pk]
    )
    assert {s.name for s in sent} == {EVALUATE_TASK}


def test_retire_deletes_a_version_s_vectors_and_refuses_the_active_one(
    admin_client: Client, versions: Versions
) -> None:
    green_backfilled(versions)
    assert ProductEmbedding.objects.filter(model=versions.green).count() == 3

    response = run_action(admin_client, "retire", versions.blue, versions.green)

    assert sorted(messages_of(response)) == [
        ("error", "blue is active; activate another version before retiring it"),
        ("success", "green retired."),
    ]
    assert states() == {"blue": "active", "green": "retired"}
    assert not ProductEmbedding.objects.filter(model=versions.green).exists()
    assert ProductEmbedding.objects.filter(model=versions.blue).count() == 3


# ---- who may use them ----------------------------------------------------------------------
@pytest.mark.parametrize("user", ["anonymous", "not staff"])
@pytest.mark.parametrize(
    ("method", "url"),
    [("get", CHANGELIST), ("get", TRAIN), ("post", TRAIN), ("get", COMPARE), ("post", ROLLBACK)],
)
def test_only_staff_reach_the_views_others_are_sent_to_log_in(
    user: str, method: str, url: str, embeddings_queue: TaskQueue
) -> None:
    client = Client()
    if user == "not staff":
        client.force_login(User.objects.create_user("shopper", password="pw-for-tests-only"))

    if method == "post":
        response = client.post(url, {"base": "default", "key": "x"})
    else:
        response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={url}"
    assert embeddings_queue.take_all() == []  # no training queued


def test_a_roll_back_posted_by_a_non_staff_user_changes_nothing(versions: Versions) -> None:
    embedding_model_activate(model=green_backfilled(versions))
    client = Client()
    client.force_login(User.objects.create_user("shopper", password="pw-for-tests-only"))

    response = client.post(ROLLBACK)

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert states() == {"blue": "ready", "green": "active"}
