"""The recommendation service through a real HTTP client (httpx) against real servers on loopback.

The module fixture writes what a pipeline run leaves (tests/test_serving.py's `materialize`: a
trained two-tower, text embeddings, the item index), product images for every item (placeholder
cards, the first few replaced by noise images that a tiny random CLIP embeds for search by
image), and publishes it as a release. `python -m rec_core.service` then runs as a separate
process on a free loopback port, started and always stopped by the fixture. Two in-process
uvicorn servers (threads) cover what needs an injected fault or a non-loopback address.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rec_core.data.paths import image_link
from rec_core.release import MODEL_DIR, publish_release
from rec_core.storage import read_parquet, write_parquet
from tests.chromium import rendered_dom
from tests.conftest import REPO
from tests.processes import start_process_group, stop_process_group
from tests.test_serving import materialize

CLIP_ITEMS = 24  # items whose product image is a noise image embedded by the tiny CLIP
MAX_UPLOAD_MB = 0.05  # the test server's upload limit: 52,428 bytes
TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service_process(root, *args: str, host: str = "127.0.0.1", env: dict | None = None):
    """`python -m rec_core.service` on a free port; yields (base url, process); always stops it."""
    port = free_port()
    environment = {**os.environ, **(env or {})}
    log_path = root.parent / f"service-{port}.log"
    with open(log_path, "wb") as log:
        process = start_process_group(
            [sys.executable, "-m", "rec_core.service", "--root", str(root), "--host", host, "--port", str(port), *args],
            REPO,
            environment,
            log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not answer /healthz within 180 s")
            time.sleep(0.3)
        yield url, process
    finally:
        stop_process_group(process)


@contextlib.contextmanager
def server_thread(app, host: str = "127.0.0.1"):
    """The app on a real uvicorn server in a thread of this process; yields its port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def noise_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def published(tmp_path_factory, small_dataset):
    """(artifact root, dataset, manifest): a materialized and released root with product images and CLIP."""
    from rec_core.encoders.clip import ClipEncoder
    from rec_core.generation.generate_images import (
        ImageGenerationConfig,
        generate_images,
    )
    from rec_core.serving import model_version, vector_table
    from tests.tiny_models import save_tiny_clip

    root = tmp_path_factory.mktemp("service") / "artifacts"
    root.mkdir()
    materialize(root, small_dataset)
    version = model_version(root / MODEL_DIR)
    for name, key in (
        ("user_embeddings", "user_id"),
        ("item_embeddings", "item_id"),
    ):  # released vectors name their model
        table = read_parquet(root / f"{name}.parquet").to_pandas()
        write_parquet(vector_table(key, table[key], np.stack(table["embedding"]), version), root / f"{name}.parquet")
    items = small_dataset.items
    generate_images(items, root / "product_images", ImageGenerationConfig(image_size=64))
    clip_ids = items["item_id"].astype(str).tolist()[:CLIP_ITEMS]
    for seed, item_id in enumerate(clip_ids):
        (root / image_link(item_id)).write_bytes(noise_png(seed))
    clip_dir = save_tiny_clip(root.parent / "clip")
    vectors = ClipEncoder(str(clip_dir), device="cpu").encode_image(
        [Image.open(root / image_link(i)) for i in clip_ids]
    )
    write_parquet(
        pd.DataFrame({"item_id": clip_ids, "clip_embedding": list(vectors), "model_id": str(clip_dir)}),
        root / "item_clip_embeddings.parquet",
    )
    return root, small_dataset, publish_release(root)


@pytest.fixture(scope="module")
def service(published):
    root = published[0]
    options = ("--reload-interval", "0.3", "--max-upload-mb", str(MAX_UPLOAD_MB))
    with service_process(root, *options) as (url, process), httpx.Client(base_url=url, timeout=60) as client:
        yield client, process


def active_user(dataset) -> str:
    return dataset.interactions["user_id"].value_counts().index[0]


# ---- every endpoint ------------------------------------------------------------------------------
def test_recommendations_by_query_and_by_body(service, published):
    client, _ = service
    _, dataset, manifest = published
    user = active_user(dataset)
    by_query = client.get(f"/recommendations/{user}", params={"k": 5})
    assert by_query.status_code == 200, by_query.text
    answer = by_query.json()
    assert len(answer["items"]) == 5 and answer["requested"] == 5 and answer["reason"] is None
    assert answer["release_id"] == client.get("/release").json()["release"]["release_id"]
    seen = set(dataset.interactions.loc[dataset.interactions["user_id"] == user, "item_id"])
    assert not seen & {item["item_id"] for item in answer["items"]}  # the default filters hide what they saw
    rules = [{"rule": "category", "include": ["Books"]}, {"rule": "price_range", "max_price": 40}]
    filtered = client.get(f"/recommendations/{user}", params={"k": 4, "filters": json.dumps(rules)})
    by_body = client.request("GET", f"/recommendations/{user}", json={"k": 4, "filters": rules})
    assert filtered.status_code == by_body.status_code == 200, (filtered.text, by_body.text)
    items = by_body.json()["items"]
    assert [i["item_id"] for i in items] == [i["item_id"] for i in filtered.json()["items"]] and len(items) == 4
    assert all(i["category"].startswith("Books") and i["discounted_price"] <= 40 for i in items)
    assert manifest["release_id"] in {
        by_body.json()["release_id"],
        client.get("/release").json()["release"]["release_id"],
    }


def test_cold_start_similar_and_text_search(service, published):
    client, _ = service
    dataset = published[1]
    cold = client.post(
        "/recommendations", json={"features": {"age": 31, "gender": "F", "preferences": ["Books"]}, "k": 6}
    )
    assert cold.status_code == 200, cold.text
    assert len(cold.json()["items"]) == 6 and {i["match"] for i in cold.json()["items"]} == {"model"}
    item = dataset.items.iloc[3]
    similar = client.get(f"/items/{item.item_id}/similar", params={"k": 3})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    assert item.item_id not in {i["item_id"] for i in similar.json()["items"]}
    found = client.get("/search", params={"q": item.product_name, "k": 3, "filters": "[]"})
    assert found.status_code == 200, found.text
    assert found.json()["items"][0]["item_id"] == item.item_id and found.json()["items"][0]["match"] == "exact_name"


def test_search_by_uploaded_image(service, published):
    client, _ = service
    root, dataset, _ = published
    item_id = str(dataset.items["item_id"].iloc[7])
    upload = {"file": ("query.png", (root / image_link(item_id)).read_bytes(), "image/png")}
    found = client.post("/search/image", params={"k": 3, "filters": "[]"}, files=upload)
    assert found.status_code == 200, found.text
    assert found.json()["items"][0]["item_id"] == item_id and found.json()["items"][0]["match"] == "image"


def test_history_users_images_page_and_health(service, published):
    client, _ = service
    root, dataset, manifest = published
    user = active_user(dataset)
    assert client.get("/healthz").json()["status"] == "ok"
    release = client.get("/release").json()
    assert release["last_reload_error"] is None and release["release"]["model_version"] == manifest["model_version"]
    assert client.get("/users", params={"limit": 3}).json()[0] == user
    history = client.get(f"/users/{user}/history", params={"n": 4}).json()["items"]
    mine = dataset.interactions[dataset.interactions["user_id"] == user]
    assert len(history) == 4 and {h["item_id"] for h in history} <= set(mine["item_id"])
    stamps = [h["timestamp"] for h in history]
    assert stamps == sorted(stamps, reverse=True) and stamps[0] == mine["timestamp"].max().strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    image = client.get(f"/items/{history[0]['item_id']}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (root / image_link(history[0]["item_id"])).read_bytes()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "rec-platform explorer" in page.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/recommendations/{user_id}",
        "/recommendations",
        "/items/{item_id}/similar",
        "/search",
        "/search/image",
        "/healthz",
        "/release",
    } <= set(paths)


# ---- bad requests ------------------------------------------------------------------------------
def bomb_png() -> bytes:
    """A small file that declares 7000 x 7000 = 49M pixels (over the 40M limit): refused from its header."""
    buffer = io.BytesIO()
    Image.new("1", (7000, 7000)).save(buffer, "PNG")
    return buffer.getvalue()


def streamed_upload(size: int):
    """A well-formed multipart upload of `size` bytes, sent in chunks (Transfer-Encoding: chunked)."""
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    body = head + bytes(size) + b"\r\n--x--\r\n"
    return iter([body[i : i + 30_000] for i in range(0, len(body), 30_000)])


BAD_REQUESTS = [  # (method, path, request keyword arguments, status, words the message holds)
    ("GET", "/recommendations/NO_SUCH_USER", {}, 404, "unknown user 'NO_SUCH_USER'"),
    ("GET", "/recommendations/{user}", {"params": {"k": 0}}, 422, "k must be at least 1, got 0"),
    ("GET", "/recommendations/{user}", {"params": {"k": 5000}}, 422, "above the limit of 1000"),
    ("GET", "/recommendations/{user}", {"params": {"k": "ten"}}, 422, "valid integer"),
    (
        "GET",
        "/recommendations/{user}",
        {"params": {"filters": '[{"rule": "no_such_rule"}]'}},
        422,
        "unknown filter rule 'no_such_rule'",
    ),
    (
        "GET",
        "/recommendations/{user}",
        {"params": {"filters": '[{"rule": "price_range", "max_price": "cheap"}]'}},
        422,
        "price_range",
    ),
    ("GET", "/recommendations/{user}", {"params": {"filters": "{not json"}}, 422, "filters: not valid JSON"),
    ("GET", "/recommendations/{user}", {"params": {"filters": '{"rule": "available"}'}}, 422, "expected a JSON list"),
    ("GET", "/recommendations/{user}", {"params": {"k": 3}, "json": {"k": 3}}, 422, "not both"),
    ("GET", "/recommendations/{user}", {"json": {"k": 3, "extra": 1}}, 422, "Extra inputs are not permitted"),
    (
        "POST",
        "/recommendations",
        {"json": {"features": {"age": 400}, "k": 3}},
        422,
        "age must be a number within 0..130",
    ),
    ("POST", "/recommendations", {"json": {"k": 3}}, 422, "Field required"),
    (
        "POST",
        "/recommendations",
        {"content": b"{", "headers": {"content-type": "application/json"}},
        422,
        "JSON decode error",
    ),
    ("GET", "/items/NO_SUCH_ITEM/similar", {}, 404, "unknown item 'NO_SUCH_ITEM'"),
    ("GET", "/items/NO_SUCH_ITEM/image", {}, 404, "has no product image"),
    ("GET", "/search", {"params": {"q": "   "}}, 422, "the search query is empty"),
    ("GET", "/search", {}, 422, "Field required"),
    ("GET", "/users/NO_SUCH_USER/history", {}, 404, "unknown user 'NO_SUCH_USER'"),
    (
        "POST",
        "/search/image",
        {"files": {"file": ("notes.txt", b"just some text", "text/plain")}},
        422,
        "the uploaded file 'notes.txt': is not an image",
    ),
    (
        "POST",
        "/search/image",
        {"files": {"file": ("cut.png", noise_png(1)[:80], "image/png")}},
        422,
        "is truncated or corrupt",
    ),
    (
        "POST",
        "/search/image",
        {"files": {"file": ("bomb.png", bomb_png(), "image/png")}},
        422,
        "49,000,000 pixels, over the limit",
    ),
    (
        "POST",
        "/search/image",
        {"files": {"file": ("big.png", bytes(120_000), "image/png")}},
        413,
        "this endpoint accepts at most",
    ),
    (
        "POST",
        "/search/image",
        {
            "content": streamed_upload(120_000),  # no Content-Length to check first
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
        413,
        "Content Too Large",
    ),
    ("POST", "/search/image", {}, 422, "Field required"),
    (
        "POST",
        "/recommendations",
        {"content": iter([b" " * 40_000] * 2), "headers": {"content-type": "application/json"}},
        413,
        "Content Too Large",
    ),
    (
        "POST",
        "/recommendations",
        {"json": {"features": {}, "filters": [{"rule": "x" * 70_000}]}},
        413,
        "this endpoint accepts at most",
    ),
]


@pytest.mark.parametrize(
    "method, path, kwargs, status, message",
    BAD_REQUESTS,
    ids=[f"{m} {p} {s} {msg[:30]}" for m, p, _, s, msg in BAD_REQUESTS],
)
def test_bad_request_gets_a_4xx_with_a_clear_message_and_the_server_keeps_serving(
    service, published, method, path, kwargs, status, message
):
    client, process = service
    user = active_user(published[1])
    response = client.request(method, path.format(user=user), **kwargs)
    assert response.status_code == status, response.text
    assert message in response.text
    assert "Traceback" not in response.text
    assert process.poll() is None
    assert len(client.get(f"/recommendations/{user}", params={"k": 2}).json()["items"]) == 2


def test_unexpected_error_is_a_500_without_internals(published):
    """A feature store that fails mid-request: 500, nothing of the exception in the body, and serving goes on."""
    from rec_core.service import LiveRecommender, create_app
    from rec_core.serving import Recommender

    class BrokenFeatureStore:
        def user_embedding(self, user_id):
            raise ConnectionError("redis://secret-host:6379 connection reset")

        def user_profile(self, user_id):
            return None

    app = create_app(LiveRecommender(Recommender.load(published[0], feature_source=BrokenFeatureStore()), 0))
    with server_thread(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        broken = client.get("/recommendations/U000001")
        assert broken.status_code == 500
        assert broken.json() == {"detail": "internal server error; the service log has the details"}
        assert client.get("/search", params={"q": "a", "k": 2}).status_code == 200


# ---- who may connect -----------------------------------------------------------------------------
def test_a_non_loopback_bind_without_a_token_refuses_to_start(published):
    env = {key: value for key, value in os.environ.items() if key != "REC_SERVICE_TOKEN"}
    for extra in ({}, {"REC_SERVICE_TOKEN": "short"}):
        port = free_port()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "rec_core.service",
                "--root",
                str(published[0]),
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 2, run.stderr
        assert "REC_SERVICE_TOKEN" in run.stderr and (
            "refusing to listen on '0.0.0.0'" in run.stderr or "use at least 16" in run.stderr
        )
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing is listening


def test_with_a_token_every_request_but_healthz_needs_it(published):
    root = published[0]
    with service_process(root, host="0.0.0.0", env={"REC_SERVICE_TOKEN": TOKEN}) as (url, process):
        user = active_user(published[1])
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no token
        for path in (f"/recommendations/{user}", "/", "/release", "/openapi.json", "/docs"):
            missing = httpx.get(f"{url}{path}")
            assert missing.status_code == 401 and "missing 'Authorization: Bearer <token>'" in missing.text, path
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}x"})
            assert wrong.status_code == 401 and "invalid bearer token" in wrong.text
            right = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200, (path, right.text)
        assert process.poll() is None


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_without_a_token_only_loopback_connections_are_answered(published):
    """uvicorn started by hand on 0.0.0.0 never passed check_bind: the gate still refuses other addresses."""
    from rec_core.service import LiveRecommender, create_app
    from rec_core.serving import Recommender

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    app = create_app(LiveRecommender(Recommender.load(published[0]), 0))
    with server_thread(app, host="0.0.0.0") as port:
        outside = httpx.get(f"http://{address}:{port}/release")
        assert outside.status_code == 401 and "answers loopback connections only" in outside.text
        assert httpx.get(f"http://{address}:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/release").status_code == 200


# ---- the page in a browser ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chromium_shows_history_and_recommendation_cards_with_images(service, published, tmp_path):
    client, _ = service
    user = active_user(published[1])
    dom = rendered_dom(f"{client.base_url}/?user={user}", tmp_path / "p", "1400,1000", 20000)
    from html.parser import HTMLParser

    class Cards(HTMLParser):
        def __init__(self):
            super().__init__()
            self.section, self.cards = None, {"history": [], "results": []}

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if attrs.get("id") in (*self.cards, "similar-block"):
                self.section = attrs["id"] if attrs["id"] in self.cards else None
            if self.section and attrs.get("class") == "card":
                self.cards[self.section].append([])
            elif self.section and self.cards[self.section] and (tag == "img" or attrs.get("class") == "noimg"):
                self.cards[self.section][-1].append(tag if tag == "img" else "missing")

    parsed = Cards()
    parsed.feed(dom)
    history, results = parsed.cards["history"], parsed.cards["results"]
    assert len(history) == 6 and len(results) == 12, (len(history), len(results))
    assert all(card == ["img"] for card in history + results)  # every card kept its product image (none failed)


# ---- a new release while serving -----------------------------------------------------------------
def test_several_worker_processes_serve_the_same_release(published):
    """`--workers 2`: two uvicorn processes on one socket, each with its own copy of the release; every
    answer, whichever process gives it, comes from that release, and stopping the service stops them."""
    import psutil

    root, dataset, _ = published
    user = active_user(dataset)
    with service_process(root, "--workers", "2", "--reload-interval", "0.3") as (url, process):
        workers = [
            child
            for child in psutil.Process(process.pid).children()
            if any("spawn_main" in part for part in child.cmdline())
        ]
        assert len(workers) == 2
        current = httpx.get(f"{url}/release").json()["release"]["release_id"]
        answers = [httpx.get(f"{url}/recommendations/{user}", params={"k": 3}) for _ in range(20)]  # new connections
        assert all(answer.status_code == 200 for answer in answers)
        assert {answer.json()["release_id"] for answer in answers} == {current}
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)


def test_worker_settings_reach_each_worker_through_the_environment(published, monkeypatch):
    """What `--workers N` hands every worker process (`worker_environment`), read back by
    `app_from_environment`: the reload interval, and the upload limit the gate enforces."""
    from fastapi.testclient import TestClient

    from rec_core.service import ServiceSettings, app_from_environment, worker_environment
    from rec_core.service.app import MULTIPART_OVERHEAD_BYTES

    monkeypatch.delenv("REC_SERVICE_TOKEN", raising=False)
    for name, value in worker_environment(published[0], ServiceSettings(max_upload_bytes=1234), 0.7).items():
        monkeypatch.setenv(name, value)
    with TestClient(app_from_environment(), base_url="http://127.0.0.1") as client:  # a loopback server
        assert client.get("/release").json()["reload_interval_s"] == 0.7
        big = client.post("/search/image", files={"file": ("big.png", bytes(40_000), "image/png")})
        assert big.status_code == 413 and f"at most {1234 + MULTIPART_OVERHEAD_BYTES:,}" in big.text
    monkeypatch.setenv("REC_SERVICE_RELOAD_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="REC_SERVICE_RELOAD_INTERVAL_S='soon' is not a valid float"):
        app_from_environment()


def test_the_bench_load_generator_counts_answers_errors_and_releases(service, published):
    """`bench service`'s `drive` (httpcore connections, one per thread): every request is sent once and
    timed, a 404 counts as an error with its body, and each 200 is tallied under the release that answered."""
    from rec_core.bench.service import drive

    client, _ = service
    user = active_user(published[1])
    paths = [f"/recommendations/{user}?k=3", "/recommendations/nobody?k=3"]
    load = drive(str(client.base_url).rstrip("/"), paths, concurrency=3, count=12)
    assert len(load.latencies) == 12 and all(latency > 0 for latency in load.latencies) and load.seconds > 0
    assert len(load.errors) == 6 and all(error.startswith("404: ") and "unknown user" in error for error in load.errors)
    assert load.releases == {client.get("/release").json()["release"]["release_id"]: 6}


def test_a_release_published_under_load_is_served_without_errors(service, published):
    """4 clients keep asking while a new release (a rebuilt index) is published; the reload loop
    (every 0.3 s here) swaps it in. No request fails, and answers come from both releases."""
    from rec_core.index import ItemIndex

    client, process = service
    root, dataset, _ = published
    user = active_user(dataset)
    before = client.get("/release").json()["release"]["release_id"]
    errors, releases, stop = [], set(), threading.Event()

    def ask():
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            while not stop.is_set():
                try:
                    response = own.get(f"/recommendations/{user}", params={"k": 5})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                if response.status_code != 200:
                    errors.append(response.text)
                else:
                    releases.add(response.json()["release_id"])

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for thread in askers:
        thread.start()
    try:
        old = ItemIndex.load(root / "item_index")
        ItemIndex.build(old.item_ids, old.vectors).save(root / "item_index")  # same vectors, a new build
        manifest = publish_release(root)
        deadline = time.monotonic() + 60
        while client.get("/release").json()["release"]["release_id"] != manifest["release_id"]:
            assert time.monotonic() < deadline, "the service did not pick up the new release within 60 s"
            time.sleep(0.1)
        time.sleep(0.5)  # requests answered on the new release
    finally:
        stop.set()
        for thread in askers:
            thread.join(timeout=60)
    assert errors == []
    assert releases == {before, manifest["release_id"]}
    status = client.get("/release").json()
    assert status["reloads"] >= 1 and status["last_reload_error"] is None
    assert client.get(f"/users/{user}/history").status_code == 200 and process.poll() is None
