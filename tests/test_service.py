"""The HTTP service through the ASGI client: recommendations, models, security, bad input."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from trainer.core.config import TrainConfig
from trainer.core.training import train_in_process
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import load_checkpoint, state_digest


@pytest.fixture(scope="module")
def roots(tiny_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("service")
    data_root, model_root = base / "data", base / "models"
    data_root.mkdir()
    shutil.copytree(tiny_data, data_root / "tiny")
    data = PreparedData.load(str(data_root / "tiny"))
    for name, seed in (("run-a", 0), ("team/run-b", 1)):
        train_in_process(
            TrainConfig(preset="paper", epochs=2, lr=0.01, batch_size=1024, seed=seed),
            data,
            str(model_root / name),
            log=lambda s: None,
        )
    return data_root, model_root


def _client(roots, **overrides):
    data_root, model_root = roots
    env = {
        "ADASIR_DATA_ROOT": str(data_root),
        "ADASIR_MODEL_ROOT": str(model_root),
        "ADASIR_RAY_ADDRESS": "http://127.0.0.1:9",
        **overrides,
    }
    return TestClient(create_app(Settings.from_env(env)))


def test_recommend_matches_direct_scoring_and_excludes_seen(roots):
    client = _client(roots)
    ckpt = load_checkpoint(str(roots[1] / "run-a" / "checkpoint"))
    user = ckpt["user_ids"][7]
    r = client.post("/recommend", json={"model": "run-a", "user": user, "k": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    items = [x["item"] for x in body["items"]]
    assert body["model"] == "run-a" and body["fallback"] is None and len(items) == 20
    seen = {ckpt["item_ids"][i] for u, i in zip(ckpt["seen_users"], ckpt["seen_items"]) if u == 7}
    assert not seen & set(items)
    scores = ckpt["state"]["item_emb"] @ ckpt["state"]["user_emb"][7]
    scores[[ckpt["item_ids"].index(s) for s in seen]] = -float("inf")
    expected = [ckpt["item_ids"][i] for i in torch.topk(scores, 20).indices.tolist()]
    assert items == expected
    assert [x["score"] for x in body["items"]] == pytest.approx(
        torch.topk(scores, 20).values.tolist(), rel=1e-5
    )
    with_seen = client.post(
        "/recommend",
        json={"model": "run-a", "user": user, "k": len(ckpt["item_ids"]), "exclude_seen": False},
    )
    assert len(with_seen.json()["items"]) == len(ckpt["item_ids"])


def test_batch_latest_fallback_and_unknowns(roots):
    client = _client(roots)
    users = client.get("/models").json()["models"]
    assert {m["id"] for m in users} == {"run-a", "team/run-b"}
    assert all(m["test"]["ndcg@50"] > 0 and m["dataset"]["counts"]["users"] for m in users)
    ckpt = load_checkpoint(str(roots[1] / "run-a" / "checkpoint"))
    a, b = ckpt["user_ids"][:2]
    r = client.post("/recommend/batch", json={"model": "team/run-b", "users": [a, b], "k": 5})
    assert r.status_code == 200 and [x["user"] for x in r.json()["results"]] == [a, b]
    assert client.post("/recommend", json={"user": a}).json()["model"] in ("run-a", "team/run-b")
    r = client.post("/recommend", json={"model": "run-a", "user": "nobody"})
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    r = client.post(
        "/recommend", json={"model": "run-a", "user": "nobody", "fallback": "popularity", "k": 4}
    )
    assert (
        r.status_code == 200
        and r.json()["fallback"] == "popularity"
        and len(r.json()["items"]) == 4
    )
    # One unknown user does not sink the batch: it is marked, the others are answered.
    r = client.post("/recommend/batch", json={"model": "run-a", "users": [a, "ghost"], "k": 3})
    assert r.status_code == 200, r.text
    known, ghost = r.json()["results"]
    assert len(known["items"]) == 3 and known.get("error") is None
    assert ghost == {
        "user": "ghost",
        "fallback": None,
        "items": [],
        "fold_in": None,
        "error": "unknown user",
    }
    assert client.post("/recommend", json={"model": "nope", "user": a}).status_code == 404


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "run-a", "user": "u1", "k": 0},
        {"model": "run-a", "user": "u1", "k": 1001},
        {"model": "run-a", "user": "u1", "k": "ten"},
        {"model": "run-a", "user": "u1", "k": "3"},
        {"model": "run-a", "user": "u1", "k": True},
        {"model": "run-a", "user": "u1", "k": 3.0},
        {"model": "run-a", "user": "u1", "exclude_seen": "yes"},
        {"model": "run-a", "user": 17},
        {"model": "run-a", "user": "u1", "colour": "red"},
        {"model": "run-a"},
    ],
)
def test_invalid_requests_are_422(roots, payload):
    r = _client(roots).post("/recommend", json=payload)
    assert r.status_code == 422 and "Traceback" not in r.text


def test_corrupt_checkpoint_fails_alone_and_newer_checkpoint_is_picked_up(roots, tmp_path):
    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    client = _client((data_root, root), ADASIR_MODEL_CACHE="1")
    ckpt = load_checkpoint(str(root / "run-a" / "checkpoint"))
    user = ckpt["user_ids"][3]
    before = client.post("/recommend", json={"model": "run-a", "user": user, "k": 5}).json()[
        "items"
    ]
    # A newer checkpoint of the same model: scores change without a restart.
    model_pt = root / "run-a" / "checkpoint" / "model.pt"
    blob = torch.load(model_pt, weights_only=True)
    blob["state"]["item_emb"] = -blob["state"]["item_emb"]
    blob["state_sha256"] = state_digest(blob["state"])  # written as a checkpoint writes it
    torch.save(blob, model_pt)
    os.utime(model_pt, (os.path.getmtime(model_pt) + 5,) * 2)
    after = client.post("/recommend", json={"model": "run-a", "user": user, "k": 5}).json()["items"]
    assert after != before
    # Truncate the other model: it says why, run-a keeps serving.
    victim = root / "team" / "run-b" / "checkpoint" / "model.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    r = client.post("/recommend", json={"model": "team/run-b", "user": user})
    assert r.status_code == 503 and "unavailable" in r.json()["detail"]
    assert client.post("/recommend", json={"model": "run-a", "user": user}).status_code == 200
    assert client.app.state.registry.cached_ids() == ["run-a"]  # bounded cache (size 1)


def test_job_endpoints_need_a_configured_token(roots):
    client = _client(roots)
    r = client.post("/jobs", json={"dataset": "tiny"})
    assert r.status_code == 403 and "no API token" in r.json()["detail"]
    client = _client(roots, ADASIR_API_TOKEN="s3cret")
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    guarded = _client(roots, ADASIR_API_TOKEN="s3cret", ADASIR_PROTECT_RECOMMEND="1")
    assert guarded.post("/recommend", json={"user": "x"}).status_code == 401


@pytest.mark.parametrize(
    "dataset,status",
    [
        ("/etc", 422),
        ("../models", 422),
        ("tiny/../../x", 422),
        ("escape", 422),
        ("missing", 422),
    ],
)
def test_datasets_are_confined_to_the_data_root(roots, tmp_path, dataset, status):
    data_root, _ = roots
    link = data_root / "escape"
    if not link.exists():
        outside = tmp_path / "outside"
        shutil.copytree(data_root / "tiny", outside)
        link.symlink_to(outside)
    client = _client(roots, ADASIR_API_TOKEN="t")
    r = client.post("/jobs", json={"dataset": dataset}, headers={"Authorization": "Bearer t"})
    assert r.status_code == status, r.text


def test_job_request_validation_and_unreachable_cluster(roots):
    client = _client(roots, ADASIR_API_TOKEN="t")
    auth = {"Authorization": "Bearer t"}
    for bad in (
        {"train": {"sampler": {"name": "magic"}}},
        {"train": {"epochs": -1}},
        {"shell": "rm"},
        {"train": {"sampler": {"name": "dns", "shared_candidates": True}}},
        {"preset": "fastest"},
        {"train": {"loss": "bpr", "contrastive_margin": 0.1}},
    ):
        r = client.post("/jobs", json={"dataset": "tiny", **bad}, headers=auth)
        assert r.status_code == 422, (bad, r.text)
    r = client.post("/jobs", json={"dataset": "tiny", "train": {"epochs": 1}}, headers=auth)
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]


def test_health_readiness_and_docs(roots):
    client = _client(roots)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_models_added_or_removed_after_a_request_are_seen(roots, tmp_path):
    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    client = _client((data_root, root))
    user = load_checkpoint(str(root / "run-a" / "checkpoint"))["user_ids"][0]
    assert client.post("/recommend", json={"model": "run-a", "user": user}).status_code == 200
    shutil.copytree(root / "run-a", root / "run-c")
    assert client.post("/recommend", json={"model": "run-c", "user": user}).status_code == 200
    shutil.rmtree(root / "run-a")
    assert client.post("/recommend", json={"model": "run-a", "user": user}).status_code == 404


def test_big_bodies_and_batches_are_refused_without_echo(roots):
    client = _client(roots, ADASIR_MAX_BATCH_ITEMS="100")
    r = client.post(
        "/recommend",
        content=b'{"user": "' + b"x" * (2 << 20) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and len(r.content) < 200
    r = client.post("/recommend", json={"user": ["x" * 500_000]})  # wrong type, big input
    assert r.status_code == 422 and len(r.content) < 2000  # the input is not echoed back
    r = client.post("/recommend/batch", json={"model": "run-a", "users": ["a"] * 20, "k": 10})
    assert r.status_code == 422 and "users × k = 200" in r.json()["detail"]


def test_no_internal_paths_in_answers(roots, tmp_path):
    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    client = _client((data_root, root))
    for body in (client.get("/models").text, client.get("/readyz").text):
        assert str(root) not in body and str(data_root) not in body
    victim = root / "team" / "run-b" / "checkpoint" / "model.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    r = client.post("/recommend", json={"model": "team/run-b", "user": "x"})
    assert r.status_code == 503 and str(root) not in r.text


def test_a_failed_job_submission_leaves_nothing(roots, tmp_path):
    data_root, _ = roots
    root = tmp_path / "models"
    client = _client((data_root, root), ADASIR_API_TOKEN="t")
    r = client.post("/jobs", json={"dataset": "tiny"}, headers={"Authorization": "Bearer t"})
    assert r.status_code == 503
    assert not (root / "jobs").exists()


def test_named_models_need_no_walk_and_latest_comes_from_the_index(roots, monkeypatch):
    client = _client(roots, ADASIR_SCAN_INTERVAL_S="3600")
    registry = client.app.state.registry
    walks = []
    real_scan = registry.scan
    monkeypatch.setattr(registry, "scan", lambda: walks.append(1) or real_scan())
    user = load_checkpoint(str(roots[1] / "run-a" / "checkpoint"))["user_ids"][0]
    for _ in range(20):
        assert client.post("/recommend", json={"model": "ghost", "user": user}).status_code == 404
        assert client.post("/recommend", json={"model": "run-a", "user": user}).status_code == 200
        assert client.post("/recommend", json={"user": user}).status_code == 200  # latest
    assert len(walks) == 1


def test_the_cached_model_answers_while_its_checkpoint_is_replaced(roots, tmp_path):
    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    client = _client((data_root, root))
    user = load_checkpoint(str(root / "run-a" / "checkpoint"))["user_ids"][0]
    first = client.post("/recommend", json={"model": "run-a", "user": user}).json()
    ckpt = root / "run-a" / "checkpoint"
    ckpt.rename(root / "run-a" / "old")  # the gap of a two-rename swap
    assert client.post("/recommend", json={"model": "run-a", "user": user}).json() == first
    shutil.copytree(root / "run-a" / "old", ckpt)
    (ckpt / "model.pt").write_bytes((ckpt / "model.pt").read_bytes()[:100])  # newer, broken
    os.utime(ckpt / "model.pt", (os.path.getmtime(ckpt / "model.pt") + 5,) * 2)
    assert client.post("/recommend", json={"model": "run-a", "user": user}).json() == first


def test_fold_in_similar_items_and_filters(roots):
    """A history instead of a user id (fold-in), with unknown items reported; /similar; and
    filter_items / candidates honoured exactly on every call (exclude_items, the former name
    of filter_items, still accepted)."""
    client = _client(roots)
    ckpt = load_checkpoint(str(roots[1] / "run-a" / "checkpoint"))
    items = ckpt["item_ids"]
    history = [items[3], items[9], "not-an-item"]
    r = client.post("/recommend", json={"model": "run-a", "items": history, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] is None and body["fold_in"] == {
        "items_used": 2,
        "unknown_items": ["not-an-item"],
    }
    got = [x["item"] for x in body["items"]]
    assert len(got) == 5 and not set(history) & set(got)
    r = client.post("/recommend", json={"model": "run-a", "items": ["nope", "nada"]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    user = ckpt["user_ids"][7]
    plain = [
        x["item"]
        for x in client.post("/recommend", json={"model": "run-a", "user": user, "k": 10}).json()[
            "items"
        ]
    ]
    banned = plain[:4]
    for name in ("filter_items", "exclude_items"):
        r = client.post("/recommend", json={"model": "run-a", "user": user, "k": 6, name: banned})
        assert [x["item"] for x in r.json()["items"]] == plain[4:10]
    both = {"filter_items": banned, "exclude_items": banned}
    r = client.post("/recommend", json={"model": "run-a", "user": user, **both})
    assert r.status_code == 422 and "not both" in r.text
    allow = plain[2:5]
    r = client.post(
        "/recommend", json={"model": "run-a", "user": user, "k": 3, "candidates": allow}
    )
    assert [x["item"] for x in r.json()["items"]] == allow
    r = client.post(
        "/recommend", json={"model": "run-a", "user": user, "k": 4, "candidates": allow}
    )
    assert r.status_code == 422 and "leave 3 items" in r.json()["detail"]
    r = client.post("/recommend", json={"model": "run-a", "user": user, "k": 1000})
    assert r.status_code == 422 and "over the model's" in r.json()["detail"]
    r = client.post(
        "/similar",
        json={"model": "run-a", "items": [items[3], items[4]], "k": 4, "exclude_items": [items[5]]},
    )
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["item"] == items[3] and len(first["items"]) == 4
    assert items[3] not in [x["item"] for x in first["items"]]
    assert items[5] not in [x["item"] for x in first["items"] + second["items"]]
    assert client.post("/similar", json={"model": "run-a", "items": ["zz"]}).status_code == 404
    r = client.post("/recommend", json={"model": "run-a"})
    assert r.status_code == 422


def test_a_broken_newer_checkpoint_is_retried_with_backoff_not_per_request(
    roots, tmp_path, monkeypatch
):
    """A newer model.pt that fails to load under a cached model: the cached copy answers,
    the load is tried once (then after a doubling delay), GET /models says why, and a
    repaired checkpoint is picked up once the delay has passed."""
    import service.model_store as store

    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    client = _client((data_root, root))
    user = load_checkpoint(str(root / "run-a" / "checkpoint"))["user_ids"][3]
    ask = {"model": "run-a", "user": user, "k": 5}
    good = client.post("/recommend", json=ask).json()["items"]
    attempts = []
    real_load = store._load
    monkeypatch.setattr(store, "_load", lambda *a: attempts.append(a) or real_load(*a))
    model_pt = root / "run-a" / "checkpoint" / "model.pt"
    healthy = model_pt.read_bytes()
    model_pt.write_bytes(healthy[:100])
    os.utime(model_pt, (os.path.getmtime(model_pt) + 5,) * 2)
    for _ in range(20):
        r = client.post("/recommend", json=ask)
        assert r.status_code == 200 and r.json()["items"] == good
    assert len(attempts) == 1
    listed = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert "unreadable" in listed["run-a"]["load_error"]["error"]
    assert str(root) not in str(listed["run-a"])
    model_pt.write_bytes(healthy)
    os.utime(model_pt, (os.path.getmtime(model_pt) + 10,) * 2)  # a new version: no waiting
    assert client.post("/recommend", json=ask).status_code == 200 and len(attempts) == 2
    assert "load_error" not in {m["id"]: m for m in client.get("/models").json()["models"]}["run-a"]


def test_protected_recommendations_hide_loaded_models_and_docs(roots):
    client = _client(roots, ADASIR_PROTECT_RECOMMEND="1", ADASIR_API_TOKEN="t0k")
    assert "models_loaded" not in client.get("/readyz").json()
    auth = {"Authorization": "Bearer t0k"}
    assert "models_loaded" in client.get("/readyz", headers=auth).json()
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404
    public = _client(
        roots, ADASIR_PROTECT_RECOMMEND="1", ADASIR_API_TOKEN="t0k", ADASIR_PUBLIC_DOCS="1"
    )
    assert public.get("/openapi.json").status_code == 200
    assert _client(roots).get("/openapi.json").status_code == 200  # open by default


def test_job_logs_and_messages_name_no_roots_and_carry_no_tracebacks(roots):
    from service.jobs import JobService
    from service.settings import Settings

    data_root, model_root = roots
    jobs = JobService(
        Settings.from_env(
            {"ADASIR_DATA_ROOT": str(data_root), "ADASIR_MODEL_ROOT": str(model_root)}
        )
    )
    log = [
        f"data {data_root}/tiny: 600 users",
        "Traceback (most recent call last):",
        f'  File "{model_root}/x.py", line 3, in f',
        "    raise ValueError('x')",
        f"ValueError: cannot write {model_root}/jobs/a",
    ]
    kept = jobs.redact_lines(log)
    assert kept == [
        "data <data root>/tiny: 600 users",
        "ValueError: cannot write <model root>/jobs/a",
    ]
    assert jobs.redact_message("\n".join(log)) == "ValueError: cannot write <model root>/jobs/a"


def test_a_cluster_that_refuses_the_services_credentials_is_a_503_without_its_url(roots):
    """What Ray's job client raises when the service runs without the cluster's
    RAY_AUTH_MODE (an AuthenticationError): a 503 that says what to set."""

    class AuthenticationError(Exception):
        pass

    class RefusingJobs:
        def list(self):
            raise AuthenticationError("Unauthorized: http://10.1.2.3:8265")

    client = _client(roots, ADASIR_API_TOKEN="t0k")
    client.app.state.jobs = RefusingJobs()
    r = client.get("/jobs", headers={"Authorization": "Bearer t0k"})
    assert r.status_code == 503 and "RAY_AUTH_MODE" in r.json()["detail"]
    assert "8265" not in r.text and "127.0.0.1:9" not in r.text


def test_latest_of_a_dataset_is_its_newest_model(roots, tmp_path):
    """`latest:DATASET` is the newest checkpoint trained on that dataset, `latest` the newest
    of all; a dataset with no model is a 404 that lists the datasets there are."""
    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    shutil.copytree(data_root / "tiny", tmp_path / "other")
    train_in_process(
        TrainConfig(preset="paper", epochs=1, batch_size=1024),
        PreparedData.load(str(tmp_path / "other")),
        str(root / "run-other"),
        log=lambda s: None,
    )
    newest_tiny = max(
        ("run-a", "team/run-b"),
        key=lambda m: (root / m / "checkpoint" / "model.pt").stat().st_mtime,
    )
    client = _client((data_root, root))
    user = load_checkpoint(str(root / "run-a" / "checkpoint"))["user_ids"][0]
    for asked, answered in (
        ("latest:tiny", newest_tiny),
        ("latest:other", "run-other"),
        ("latest", "run-other"),
    ):
        r = client.post("/recommend", json={"model": asked, "user": user})
        assert r.status_code == 200 and r.json()["model"] == answered, (asked, r.text)
    r = client.post("/recommend", json={"model": "latest:nope", "user": user})
    assert r.status_code == 404 and "other, tiny" in r.json()["detail"]


def test_a_load_freezes_the_heap_and_an_evicted_model_is_still_freed(roots):
    """After a load the registry freezes the heap (the collector's full passes then skip the
    model's id strings, which stalled requests); a model evicted later is still freed."""
    import gc
    import weakref

    from service.model_store import ModelRegistry

    registry = ModelRegistry(str(roots[1]), cache_size=1)
    gc.unfreeze()
    first = weakref.ref(registry.get("run-a").model)
    assert gc.get_freeze_count() > 0
    registry.get("team/run-b")  # evicts run-a from the one-model cache
    assert first() is None
    gc.unfreeze()


def test_only_a_loaded_unchanged_model_is_answered_on_the_event_loop(roots, tmp_path):
    """/recommend answers a known user on the event loop only where the registry can hand
    over the cached model without a load (peek); a first request, a newer checkpoint, a
    fold-in or an unknown model take the thread pool, and both paths answer alike."""
    from service.model_store import ModelRegistry, UnknownModel
    from service.recommender import Recommender
    from service.routes.recommend import _answers_inline
    from service.schemas import RecommendRequest

    data_root, model_root = roots
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    registry = ModelRegistry(str(root))
    rec = Recommender(registry)
    user = load_checkpoint(str(root / "run-a" / "checkpoint"))["user_ids"][0]
    ask = RecommendRequest(model="run-a", user=user, k=5)
    assert registry.peek("run-a") is None and not _answers_inline(ask, rec)
    loaded = registry.get("run-a")
    assert registry.peek("run-a") is loaded and _answers_inline(ask, rec)
    history = RecommendRequest(model="run-a", items=loaded.model.item_ids[:3], k=5)
    assert not _answers_inline(history, rec)
    assert not _answers_inline(RecommendRequest(model="nope", user=user, k=5), rec)
    with pytest.raises(UnknownModel):
        registry.peek("nope")
    # Searched through ANN: in the thread pool, where concurrent searches share a batch.
    loaded.model.ann_min_items = 1
    loaded.model._ann_ranker()
    assert not _answers_inline(ask, rec)
    assert _answers_inline(ask.model_copy(update={"exact": True}), rec)
    loaded.model.ann_min_items = 0
    model_pt = root / "run-a" / "checkpoint" / "model.pt"
    os.utime(model_pt, (os.path.getmtime(model_pt) + 5,) * 2)  # a newer checkpoint: load it
    assert registry.peek("run-a") is None and not _answers_inline(ask, rec)
    client = _client((data_root, root))
    cold = client.post("/recommend", json={"model": "run-a", "user": user, "k": 5})
    warm = client.post("/recommend", json={"model": "run-a", "user": user, "k": 5})
    assert cold.status_code == warm.status_code == 200 and cold.json() == warm.json()


def test_fold_ins_share_a_limiter_of_the_configured_size(roots):
    """Fold-in requests run at most ADASIR_FOLD_IN_SLOTS at a time (default: the host's
    CPUs): more at once only contend for the GIL. 0 is refused at start-up."""
    user_items = load_checkpoint(str(roots[1] / "run-a" / "checkpoint"))["item_ids"][:3]
    for env, slots in (({"ADASIR_FOLD_IN_SLOTS": "1"}, 1), ({}, os.cpu_count())):
        client = _client(roots, **env)
        r = client.post("/recommend", json={"model": "run-a", "items": user_items, "k": 3})
        assert r.status_code == 200 and r.json()["fold_in"]["items_used"] == 3
        assert client.app.state.fold_in_limiter.total_tokens == slots
    with pytest.raises(ValueError, match="fold_in_slots"):
        _client(roots, ADASIR_FOLD_IN_SLOTS="0")
