"""Input a hostile or careless user gives the Python API, the readers and the service: each
is a one-line error of the documented kind, or the answer the documentation promises;
never a silent wrong answer."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch
from conftest import block_frame
from fastapi.testclient import TestClient

from service.app import create_app
from service.recommender import history_answer, popular_items, user_answers
from service.settings import Settings
from trainer import Model, fit
from trainer.data.formats import DataError, read_interactions
from trainer.errors import UsageError
from trainer.outputs.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A saved model's run directory (cosine scores: the recommended preset)."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    fit(block_frame(), dim=4, epochs=2, out=out)
    return str(out)


@pytest.fixture()
def model(run) -> Model:
    return Model.load(run)


# -- ids in the Python API --------------------------------------------------------------------


def test_a_bare_string_is_one_id_everywhere(model):
    user = model.user_ids[0]
    top = model.recommend(user, k=3)[0][0]
    assert top not in [i for i, _ in model.recommend(user, k=3, filter_items=top)]
    assert [i for i, _ in model.recommend(user, k=3, candidates=top)] == [top]
    history = model.item_ids[12]  # several characters, none an item of its own
    assert model.recommend_history(history, k=3) == model.recommend_history([history], k=3)
    for call in (
        lambda: model.recommend(user, filter_items=12),
        lambda: model.recommend(user, candidates=[12]),
        lambda: model.recommend_history([b"i1"]),
        lambda: model.recommend(7),
    ):
        with pytest.raises(UsageError, match="ids are strings|an id"):
            call()


def test_a_history_with_repeats_is_answered_as_without_them(model, run):
    items = model.item_ids[:3]
    once = model.recommend_history(items, k=5)
    assert model.recommend_history(items + items[:2], k=5) == once
    answered = history_answer(model, items + items[:2], k=5)
    assert [(x["item"], x["score"]) for x in answered["items"]] == once
    assert answered["fold_in"]["items_used"] == 3


def test_bad_k_and_fallback_are_one_line_usage_errors(model):
    for k in (-3, 0, 1.5, True, "3"):
        with pytest.raises(UsageError, match="k must be"):
            user_answers(model, model.user_ids[:1], k=k)
        with pytest.raises(UsageError, match="k must be"):
            popular_items(model, k)
    with pytest.raises(UsageError, match=r"fallback: give one of \['none', 'popularity'\]"):
        user_answers(model, model.user_ids[:1], fallback="bogus")


def test_fold_in_of_only_unknown_items_falls_back_to_popularity(model):
    answer = history_answer(model, ["nope", "nada"], k=3, fallback="popularity")
    assert answer["fallback"] == "popularity"
    assert [x["item"] for x in answer["items"]] == [i for i, _ in popular_items(model, 3)]
    assert answer["fold_in"] == {"items_used": 0, "unknown_items": ["nope", "nada"]}


# -- the ANN cache belongs to its tables ----------------------------------------------------


def test_a_stale_model_never_writes_its_index_beside_a_newer_one(tmp_path):
    out = tmp_path / "run"
    fit(block_frame(), dim=4, epochs=1, out=out)
    old = Model.load(out)
    old.ann_min_items = 1
    fit(block_frame(users=55, seed=3), dim=4, epochs=1, out=out, overwrite=True)
    old.recommend(old.user_ids[:3], k=5)  # builds its index; must not cache it there
    assert not [n for n in os.listdir(out / "checkpoint") if n.startswith("ann-hnsw")]
    new = Model.load(out)
    new.ann_min_items = 1
    users = new.user_ids[:30]
    approx = new.recommend(users, k=10)
    new.ann_min_items = 0
    exact = new.recommend(users, k=10)
    found = sum(len({i for i, _ in a} & {i for i, _ in e}) for a, e in zip(approx, exact))
    assert found / (10 * len(users)) >= 0.95
    assert os.path.isfile(new._ann_cache_path()) and old._ann_cache_path() != new._ann_cache_path()


# -- damaged checkpoints --------------------------------------------------------------------


def _copy(run: str, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(run, dst)
    return os.path.join(dst, "checkpoint")


def _zero_item_rows_in_place(model_pt: str) -> None:
    """Zero 20 rows of the item table inside the zip, as a byte edit (no re-save)."""
    with zipfile.ZipFile(model_pt) as archive:
        infos = archive.infolist()
        # the tensor records, largest first: the item table is one of the two big ones
        big = sorted((i for i in infos if "/data/" in i.filename), key=lambda i: -i.file_size)
        target = big[1]
    with open(model_pt, "r+b") as fh:
        fh.seek(target.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
        start = target.header_offset + 30 + int(name_len) + int(extra_len)
        fh.seek(start)
        fh.write(b"\0" * min(target.file_size, 20 * 4 * 4))


def _resaved_with_zeroed_rows(model_pt: str) -> None:
    blob = torch.load(model_pt, weights_only=True)
    blob["state"]["item_emb"][:20] = 0
    torch.save(blob, model_pt)


@pytest.mark.parametrize("damage", [_zero_item_rows_in_place, _resaved_with_zeroed_rows])
def test_altered_parameters_are_refused(run, tmp_path, damage):
    ckpt = _copy(run, tmp_path)
    damage(os.path.join(ckpt, "model.pt"))
    with pytest.raises(CheckpointError, match="checksum|digest"):
        Model.load(ckpt)


def test_a_config_or_seen_table_that_is_not_a_checkpoints_is_refused(run, tmp_path):
    ckpt = _copy(run, tmp_path)
    with open(os.path.join(ckpt, "config.json"), "w") as fh:
        json.dump([], fh)
    with pytest.raises(CheckpointError, match="config.json is not a checkpoint's"):
        Model.load(ckpt)
    shutil.copyfile(
        os.path.join(run, "checkpoint", "config.json"), os.path.join(ckpt, "config.json")
    )
    seen = pq.read_table(os.path.join(ckpt, "seen.parquet")).to_pandas()
    seen.loc[0, "user"] = -1
    pq.write_table(
        pa.Table.from_pandas(seen, preserve_index=False), os.path.join(ckpt, "seen.parquet")
    )
    with pytest.raises(CheckpointError, match="seen.parquet has user indices outside"):
        Model.load(ckpt)


# -- ids as the data gives them -------------------------------------------------------------


def test_quoted_csv_ids_and_a_byte_order_mark_are_read_as_meant(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_bytes('\ufeff"user","item","rating"\n"u0","i1",5\n"u1","i,2",4\n'.encode())
    raw = read_interactions(str(path))
    assert raw.users.to_pylist() == ["u0", "u1"] and raw.items.to_pylist() == ["i1", "i,2"]
    assert raw.ratings.tolist() == [5.0, 4.0]


def test_mixed_id_types_bad_entries_and_empty_ids_are_refused():
    mixed = pd.DataFrame({"user": [1, "1", 2], "item": ["a", "b", "c"]})
    with pytest.raises(DataError, match="user column mixes types"):
        fit(mixed, dim=4, epochs=1)
    for value in (-1.0, np.nan):
        m = sp.csr_matrix(np.array([[1.0, value], [0.0, 2.0], [1.0, 1.0]]))
        with pytest.raises(DataError, match="negative and NaN entries would train"):
            fit(m, dim=4, epochs=1)
    df = block_frame()
    for rating, match in ((np.nan, "not finite"), (-1.0, "would train as a positive")):
        rated = df.assign(rating=[rating] + [1.0] * (len(df) - 1))
        with pytest.raises(DataError, match=match):
            fit(rated, dim=4, epochs=1)
    empty_id = df.copy()
    empty_id.loc[3, "item"] = ""
    with pytest.raises(DataError, match="empty item id"):
        fit(empty_id, dim=4, epochs=1)


def test_tiny_inputs_say_what_is_wrong_in_the_callers_terms():
    with pytest.raises(DataError, match="the DataFrame has no rows"):
        fit(pd.DataFrame({"user": [], "item": []}))
    one_item = pd.DataFrame({"user": ["a", "b", "c"], "item": ["x", "x", "x"]})
    with pytest.raises(ValueError, match="1 item: .* at least 2") as caught:
        fit(one_item, dim=4, epochs=1)
    assert "--negatives" not in str(caught.value)


# -- over HTTP --------------------------------------------------------------------------------


@pytest.fixture()
def service(run, tmp_path):
    """A model root holding the good run and two broken copies of it."""
    root = tmp_path / "models"
    shutil.copytree(run, root / "good")
    shutil.copytree(run, root / "bad-config")
    with open(root / "bad-config" / "checkpoint" / "config.json", "w") as fh:
        json.dump([], fh)
    shutil.copytree(run, root / "bad-seen")
    seen_path = root / "bad-seen" / "checkpoint" / "seen.parquet"
    seen = pq.read_table(seen_path).to_pandas()
    seen.loc[0, "user"] = -1
    pq.write_table(pa.Table.from_pandas(seen, preserve_index=False), seen_path)
    env = {
        "ADASIR_DATA_ROOT": str(tmp_path),
        "ADASIR_MODEL_ROOT": str(root),
        "ADASIR_RAY_ADDRESS": "http://127.0.0.1:9",
    }
    return TestClient(create_app(Settings.from_env(env)))


def test_a_broken_checkpoint_is_a_503_for_that_model_alone(service, model):
    user = model.user_ids[0]
    for broken in ("bad-config", "bad-seen"):
        r = service.post("/recommend", json={"model": broken, "user": user, "k": 3})
        assert r.status_code == 503 and "unavailable" in r.json()["detail"], r.text
    r = service.post("/recommend", json={"model": "good", "user": user, "k": 3})
    assert r.status_code == 200
    listed = service.get("/models")
    assert listed.status_code == 200, listed.text
    by_id = {m["id"]: m for m in listed.json()["models"]}
    assert "error" in by_id["bad-config"] and "error" not in by_id["good"]


def test_similar_is_bounded_as_batches_are(service, model):
    items = (model.item_ids * 30)[:1000]
    r = service.post("/similar", json={"model": "good", "items": items, "k": 1000})
    assert r.status_code == 422 and "items × k = 1000000" in r.json()["detail"]
    ok = service.post("/similar", json={"model": "good", "items": items[:10], "k": 5})
    assert ok.status_code == 200


def test_fold_in_of_unknown_items_with_the_popularity_fallback(service, model):
    r = service.post(
        "/recommend",
        json={"model": "good", "items": ["nope"], "k": 3, "fallback": "popularity"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] == "popularity"
    assert [x["item"] for x in r.json()["items"]] == [i for i, _ in popular_items(model, 3)]
    without = service.post("/recommend", json={"model": "good", "items": ["nope"], "k": 3})
    assert without.status_code == 404


def test_job_log_tails_carry_no_host_paths(tmp_path):
    from service.jobs import JobService

    jobs = JobService(
        Settings.from_env({"ADASIR_DATA_ROOT": str(tmp_path), "ADASIR_MODEL_ROOT": str(tmp_path)})
    )
    lines = [
        "loading /home/alice/private/data.parquet",
        f"writing {tmp_path}/jobs/adasir-1",
        "epoch 1/3 loss 0.5, dashboard http://127.0.0.1:8265/api",
    ]
    assert jobs.redact_lines(lines) == [
        "loading <path>",
        "writing <model root>/jobs/adasir-1",
        "epoch 1/3 loss 0.5, dashboard http://127.0.0.1:8265/api",
    ]
    other = JobService(
        Settings.from_env({"ADASIR_DATA_ROOT": str(tmp_path), "ADASIR_MODEL_ROOT": "/elsewhere"})
    )
    assert jobs.store != other.store  # what tests/test_service_e2e.py checks on a real cluster
