"""`dlab serve` in process: every route, every refusal, the safety rules, micro-batching."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from dlab.data.mnist import MnistSampleConfig, build_mnist_sample
from dlab.errors import DlabError
from dlab.serve import build_app, is_loopback

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def digits():
    """Real MNIST test digits as 0-255 pixels, with their labels."""
    images, labels = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).test
    return images[:8], labels[:8]


@pytest.fixture(scope="module")
def client(image_run):
    with TestClient(build_app(image_run.path, max_wait_ms=1)) as test_client:
        yield test_client


def model_probabilities(run, pixels: np.ndarray) -> np.ndarray:
    meta = run.meta
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)[:, None]
    x = (x - meta.mean[0]) / meta.std[0]
    with torch.no_grad():
        return run.model.eval()(x).softmax(-1).numpy()


def test_health_metadata_and_page(client, image_run):
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["task"] == "classification" and meta["input_shape"] == [1, 28, 28]
    assert meta["verbs"] == ["predict"]  # the page shows the drawing pad for it
    assert meta["classes"] == [str(i) for i in range(10)] and meta["backend"] == "torch"
    assert meta["recipe"]["model"] == "cnn" and "accuracy" in meta["test_metrics"]
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text


def test_predict_json_answers_as_the_trained_model(client, image_run, digits):
    pixels, labels = digits
    expected = model_probabilities(image_run, pixels)
    one = client.post("/predict", json={"inputs": pixels[0].tolist()}).json()["predictions"]
    batch = client.post("/predict", json={"inputs": pixels.tolist()}).json()["predictions"]
    assert len(one) == 1 and len(batch) == len(pixels)
    assert one[0] == batch[0]
    for answer, probabilities in zip(batch, expected, strict=True):
        assert answer["label"] == str(int(probabilities.argmax()))
        assert answer["probabilities"][answer["label"]] == pytest.approx(
            probabilities.max(), abs=1e-5
        )
    assert np.mean([a["label"] == str(y) for a, y in zip(batch, labels, strict=True)]) >= 0.75
    flat = client.post("/predict", json={"inputs": (pixels[0] / 255).reshape(-1).tolist()})
    assert flat.json()["predictions"][0]["label"] == one[0]["label"]  # 0-1 floats, flattened


def test_predict_an_uploaded_image(client, digits):
    pixels, _ = digits
    png = io.BytesIO()
    Image.fromarray(pixels[0]).resize((56, 56)).save(png, format="PNG")  # resized on the server
    answer = client.post("/predict", files={"file": ("digit.png", png.getvalue(), "image/png")})
    assert answer.status_code == 200, answer.text
    reference = client.post("/predict", json={"inputs": pixels[0].tolist()}).json()
    assert answer.json()["predictions"][0]["label"] == reference["predictions"][0]["label"]
    assert answer.json()["inputs"] == ["digit.png"]


@pytest.mark.parametrize(
    ("send", "status", "message"),
    [
        (
            dict(content=b'{"inputs": [1, 2', headers={"content-type": "application/json"}),
            400,
            "malformed JSON",
        ),
        (
            dict(
                content=b'{"inputs": ' + json.dumps([[float("nan")] * 28] * 28).encode() + b"}",
                headers={"content-type": "application/json"},
            ),
            422,
            "NaN",
        ),
        (dict(json={"inputs": [[1.0] * 27] * 28}), 422, "fits neither one input"),
        (dict(json={"inputs": [[1, 2], [3]]}), 422, "same length in each dimension"),
        (dict(json={"inputs": [["a"] * 28] * 28}), 422, "a (nested) list of numbers"),
        (dict(json={"pixels": []}), 422, 'send {"inputs": [...]}'),
        (dict(json=[1, 2, 3]), 422, "should be an object"),
        (dict(json={"inputs": [[[0] * 28] * 28] * 300}), 413, "over the 256 per request limit"),
        (
            dict(content=b"x" * 50_000_000, headers={"content-type": "application/json"}),
            413,
            "MB limit",
        ),
        (
            dict(content=b"1,2,3", headers={"content-type": "text/csv"}),
            415,
            "send application/json",
        ),
        (dict(files={"file": ("notes.txt", b"not a picture", "text/plain")}), 422, "not an image"),
        (dict(files={"other": ("a.png", b"", "image/png")}), 422, "form field named 'file'"),
    ],
    ids=[
        "malformed",
        "nan",
        "shape",
        "ragged",
        "strings",
        "no-inputs",
        "not-object",
        "too-many",
        "50MB",
        "content-type",
        "non-image",
        "no-file",
    ],
)
def test_bad_requests_get_a_precise_4xx_and_the_server_lives_on(client, send, status, message):
    response = client.post("/predict", **send)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/health").status_code == 200


def test_wrong_routes_for_the_task(client, gpt_run, text_run):
    assert client.post("/generate", json={"prompt": "x"}).status_code == 404
    with TestClient(build_app(gpt_run.path)) as lm:
        assert lm.post("/predict", json={"inputs": [1]}).status_code == 404
    with TestClient(build_app(text_run.path)) as text:
        upload = text.post("/predict", files={"file": ("a.png", b"\x89PNG", "image/png")})
        assert upload.status_code == 415


def test_text_classifier(text_run):
    with TestClient(build_app(text_run.path)) as client:
        good = client.post("/predict", json={"text": "a wonderful moving film"}).json()
        assert good["predictions"][0]["label"] == "pos"
        both = client.post("/predict", json={"texts": ["i loved it", "a dull boring mess"]}).json()
        assert [p["label"] for p in both["predictions"]] == ["pos", "neg"]
        expected = text_run.predict(["i hated it"])[0]
        served = client.post("/predict", json={"text": "i hated it"}).json()["predictions"][0]
        assert served["label"] == expected.label
        for empty in ({"text": "   "}, {"texts": []}, {"text": 3}):
            response = client.post("/predict", json=empty)
            assert response.status_code == 422 and "text" in response.json()["error"]
        long = client.post("/predict", json={"text": "x" * 10_001})
        assert long.status_code == 413 and "10,000 limit" in long.json()["error"]


def test_generate_is_repeatable_and_validated(gpt_run):
    with TestClient(build_app(gpt_run.path)) as client:
        body = {"prompt": "To be", "max_new_tokens": 20, "seed": 3}
        first = client.post("/generate", json=body).json()
        assert first == client.post("/generate", json=body).json() and len(first["text"]) == 20
        assert first["text"] == gpt_run.generate("To be", 20, temperature=0.8, seed=3)
        for bad, field in (
            ({"max_new_tokens": 0}, "max_new_tokens"),
            ({"max_new_tokens": 5000}, "max_new_tokens"),
            ({"temperature": "hot"}, "temperature"),
            ({"top_p": 2}, "top_p"),
            ({"prompt": 7}, "prompt"),
        ):
            response = client.post("/generate", json=bad)
            assert response.status_code == 422 and field in response.json()["error"]
        unknown = client.post("/generate", json={"prompt": "Zebra"})  # 'Z' never seen in training
        assert unknown.status_code == 422 and "vocabulary" in unknown.json()["error"]


def test_metrics_count_requests_by_route_and_status(image_run):
    with TestClient(build_app(image_run.path)) as client:
        client.get("/health")
        client.post("/predict", json={"inputs": [[0] * 28] * 28})
        client.post("/predict", content=b"{", headers={"content-type": "application/json"})
        text = client.get("/metrics").text
    assert 'dlab_requests_total{route="/predict",status="200"} 1.0' in text
    assert 'dlab_requests_total{route="/predict",status="400"} 1.0' in text
    assert 'dlab_request_seconds_count{route="/predict"} 2.0' in text
    assert "dlab_batch_size_count 1.0" in text
    # the process's memory: the peak is at least the current size, and both are real sizes
    peak = float(text.split("\ndlab_peak_resident_memory_bytes ")[1].split()[0])
    current = float(text.split("\nprocess_resident_memory_bytes ")[1].split()[0])
    assert 50 * 2**20 < current <= peak + 2**20  # the peak is rounded to 0.1 MiB


def test_a_token_guards_everything_but_the_page_and_health(image_run):
    app = build_app(image_run.path, host="0.0.0.0", token=TOKEN)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN[:-1]}):
            response = client.get("/metadata", headers=headers)
            assert response.status_code == 401 and "token" in response.json()["error"]
        assert client.post("/predict", json={"inputs": [0] * 784}).status_code == 401
        ok = client.get("/metadata", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_binding_beyond_loopback_needs_a_token_or_insecure(image_run, monkeypatch):
    monkeypatch.delenv("DLAB_SERVE_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with pytest.raises(DlabError, match="give --token"):
        build_app(image_run.path, host="0.0.0.0")
    with pytest.raises(DlabError, match="at least 16 characters"):
        build_app(image_run.path, host="0.0.0.0", token="short")
    build_app(image_run.path, host="0.0.0.0", insecure=True)
    monkeypatch.setenv("DLAB_SERVE_TOKEN", TOKEN)
    with TestClient(build_app(image_run.path, host="0.0.0.0")) as client:
        assert client.get("/metadata").status_code == 401  # the environment's token is enforced


def test_no_cors_unless_asked(image_run):
    origin = {"origin": "https://elsewhere.example"}
    with TestClient(build_app(image_run.path)) as client:
        assert "access-control-allow-origin" not in client.get("/metadata", headers=origin).headers
    with TestClient(build_app(image_run.path, cors=["https://elsewhere.example"])) as client:
        allowed = client.get("/metadata", headers=origin).headers
        assert allowed["access-control-allow-origin"] == "https://elsewhere.example"


def test_onnx_backend_serves_the_export(own_image_run):
    from dlab.export import export_onnx

    export_onnx(own_image_run.path)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).tolist()
    with TestClient(build_app(own_image_run.path, backend="torch")) as torch_client:
        expected = torch_client.post("/predict", json={"inputs": images}).json()["predictions"]
    for target, backend in (
        (own_image_run.path, "onnx"),
        (own_image_run.path / "model.onnx", "auto"),
    ):
        with TestClient(build_app(target, backend=backend)) as client:
            assert client.get("/metadata").json()["backend"] == "onnxruntime"
            served = client.post("/predict", json={"inputs": images}).json()["predictions"]
            for a, b in zip(served, expected, strict=True):
                assert a["label"] == b["label"]
                for name, p in a["probabilities"].items():
                    assert p == pytest.approx(b["probabilities"][name], abs=1e-4)
    with pytest.raises(DlabError, match="no such ONNX file"):
        build_app(own_image_run.path / "missing.onnx")


def test_concurrent_requests_share_forward_passes(image_run, digits):
    pixels, _ = digits

    async def burst(max_batch: int) -> tuple[list[str], str]:
        app = build_app(image_run.path, max_batch=max_batch, max_wait_ms=50)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            answers = await asyncio.gather(
                *(client.post("/predict", json={"inputs": p.tolist()}) for p in pixels)
            )
            metrics = (await client.get("/metrics")).text
        return [a.json()["predictions"][0]["label"] for a in answers], metrics

    batched, metrics = asyncio.run(burst(32))
    passes = float(metrics.split("dlab_batch_size_count ")[1].split()[0])
    assert passes < len(pixels)  # requests arriving together were answered together
    alone, metrics = asyncio.run(burst(1))
    assert float(metrics.split("dlab_batch_size_count ")[1].split()[0]) == len(pixels)
    assert batched == alone  # and each got its own answer


def test_a_background_server_that_cannot_start_says_why(tmp_path):
    from dlab.serve.process import serving

    with (
        pytest.raises(DlabError, match="dlab serve exited: .*no-such-run"),
        serving(tmp_path / "no-such-run"),
    ):
        pass


def test_a_port_taken_before_the_server_binds_it_is_tried_again(image_run, monkeypatch):
    """free_port() releases the port it found: another process may bind it first."""
    import socket
    import urllib.request

    from dlab.serve import process

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken, real = squatter.getsockname()[1], process.free_port()
        ports = iter([taken, real])
        monkeypatch.setattr(process, "free_port", lambda: next(ports))
        with process.serving(image_run.path, timeout=120) as url:
            assert url == f"http://127.0.0.1:{real}"
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                assert answer.status == 200


@pytest.mark.parametrize("fixture", ["text_run", "lstm_text_run"])
def test_concurrent_texts_of_different_lengths_share_a_batch(fixture, request):
    """Each request is padded to its own longest text; requests batched together were once
    concatenated as they were ("Sizes of tensors must match": a 500 for the whole batch)."""
    run = request.getfixturevalue(fixture)
    words = [
        "a",
        "wonderful",
        "moving",
        "film",
        "with",
        "great",
        "acting",
        "and",
        "a",
        "story",
        "i",
        "loved",
    ]
    texts = [" ".join(words[: 1 + i % len(words)]) for i in range(24)]

    async def burst(max_batch: int) -> tuple[list[int], list[dict], str]:
        app = build_app(run.path, max_batch=max_batch, max_wait_ms=50)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            answers = await asyncio.gather(
                *(
                    client.post("/predict", json={"texts": [t, t[: len(t) // 2] or t]})
                    for t in texts
                )
            )
            metrics = (await client.get("/metrics")).text
        return [a.status_code for a in answers], [a.json() for a in answers], metrics

    statuses, batched, metrics = asyncio.run(burst(32))
    assert statuses == [200] * len(texts)
    assert float(metrics.split("dlab_batch_size_count ")[1].split()[0]) < len(texts)
    _, alone, _ = asyncio.run(burst(1))
    for together, single in zip(batched, alone, strict=True):  # padding changed no answer
        for a, b in zip(together["predictions"], single["predictions"], strict=True):
            assert a["label"] == b["label"]
            for name, p in a["probabilities"].items():
                assert p == pytest.approx(b["probabilities"][name], abs=1e-5)


def test_the_batcher_pads_token_requests_and_refuses_other_mismatches():
    from dlab.serve.batching import join

    joined = join([torch.tensor([[5, 6, 7]]), torch.tensor([[8], [9]])], pad_id=0)
    assert joined.tolist() == [[5, 6, 7], [8, 0, 0], [9, 0, 0]]
    with pytest.raises(ValueError, match="different input shapes"):
        join([torch.zeros(1, 2, 3), torch.zeros(1, 2, 4)], pad_id=0)


def test_a_bug_in_the_model_is_a_counted_500_not_a_dropped_connection(
    image_run, digits, monkeypatch
):
    from dlab.serve.backends import TorchBackend

    def broken(self, batch):
        raise RuntimeError("Sizes of tensors must match")

    monkeypatch.setattr(TorchBackend, "outputs", broken)
    pixels, _ = digits
    with TestClient(build_app(image_run.path), raise_server_exceptions=False) as client:
        answer = client.post("/predict", json={"inputs": pixels[0].tolist()})
        metrics = client.get("/metrics").text
    assert answer.status_code == 500 and "internal error" in answer.json()["error"]
    assert 'dlab_requests_total{route="/predict",status="500"} 1.0' in metrics


def test_hostile_bodies_get_a_4xx_never_a_500(client):
    deep = "[" * 100_000 + "]" * 100_000
    cases = [
        ('{"inputs": [' + "9" * 400 + "]}", 422, "a (nested) list of numbers"),  # float overflow
        ('{"inputs": [' + "9" * 5000 + "]}", 400, "malformed JSON"),  # over Python's int limit
        ('{"inputs": ' + deep + "}", 400, "malformed JSON"),
    ]
    for body, status, message in cases:
        answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status and message in answer.json()["error"], body[:40]


def test_an_image_over_the_pixel_limit_is_refused(client, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 56x56 PNG is now a bomb
    png = io.BytesIO()
    Image.new("L", (56, 56)).save(png, format="PNG")
    answer = client.post("/predict", files={"file": ("big.png", png.getvalue(), "image/png")})
    assert answer.status_code == 422 and "pixels; refused" in answer.json()["error"]


def test_the_bearer_scheme_is_case_insensitive_and_a_bare_token_is_not_enough(image_run):
    with TestClient(build_app(image_run.path, token=TOKEN)) as client:
        for scheme in ("Bearer", "bearer", "BEARER"):
            answer = client.get("/metadata", headers={"authorization": f"{scheme} {TOKEN}"})
            assert answer.status_code == 200, scheme
        assert client.get("/metadata", headers={"authorization": TOKEN}).status_code == 401
        assert (
            client.get("/metadata", headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
        )


def test_a_request_naming_another_host_is_refused(image_run):
    app = build_app(image_run.path, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 200
        rebound = client.get("/health", headers={"host": "attacker.example"})
    assert rebound.status_code == 400


def test_generation_runs_beside_the_event_loop_with_a_bounded_queue(gpt_run, monkeypatch):
    """A slow generation no longer blocks /health; a full queue answers 503 with Retry-After;
    a generation over its time answers 504."""
    import time as clock

    from dlab.serve.app import Worker, create_app
    from dlab.serve.backends import load_backend

    def slow(self, prompt, *args):
        clock.sleep(0.6)
        return "!"

    monkeypatch.setattr(type(load_backend(gpt_run.path)), "generate", slow)

    async def scenario(worker: Worker) -> tuple[list[int], float, dict]:
        app = create_app(load_backend(gpt_run.path), worker=worker, max_body_mb=0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            generations = [
                asyncio.create_task(client.post("/generate", json={"prompt": "a"}))
                for _ in range(3)
            ]
            await asyncio.sleep(0.1)  # the first is running, the second waits, the third...
            started = clock.perf_counter()
            health = await client.get("/health")
            waited = clock.perf_counter() - started
            answers = await asyncio.gather(*generations)
        assert health.status_code == 200
        busy = next((a for a in answers if a.status_code == 503), None)
        return [a.status_code for a in answers], waited, dict(busy.headers) if busy else {}

    statuses, waited, headers = asyncio.run(scenario(Worker(queue=2, timeout_s=5)))
    assert sorted(statuses) == [200, 200, 503] and headers.get("retry-after") == "1"
    assert waited < 0.3  # /health answered while a generation ran
    statuses, _, _ = asyncio.run(scenario(Worker(queue=8, timeout_s=0.3)))
    assert 504 in statuses


def test_a_chunked_body_over_the_limit_is_a_413_not_a_reset(image_run):
    def chunks():  # no Content-Length: the size is only known while it streams
        for _ in range(10):
            yield b"x" * 1_000_000

    with TestClient(build_app(image_run.path)) as client:
        answer = client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert client.get("/health").status_code == 200
    assert answer.status_code == 413 and "MB limit" in answer.json()["error"]


def test_token_cors_and_max_batch_reach_the_server_from_the_command_line(image_run, digits):
    """`dlab serve RUN --token --cors --max-batch`, as a real process: each option takes effect."""
    from concurrent.futures import ThreadPoolExecutor

    from dlab.serve.process import serving

    pixels, _ = digits
    origin, other = "https://app.example", "https://elsewhere.example"
    options = ["--token", TOKEN, "--cors", origin, "--max-batch", "2", "--max-wait-ms", "300"]
    with serving(image_run.path, *options, timeout=120) as url:
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/metadata").status_code == 401
        allowed = httpx.get(f"{url}/metadata", headers={**auth, "origin": origin})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        refused = httpx.get(f"{url}/metadata", headers={**auth, "origin": other})
        assert "access-control-allow-origin" not in refused.headers

        def predict(image: np.ndarray) -> int:
            answer = httpx.post(
                f"{url}/predict", json={"inputs": image.tolist()}, headers=auth, timeout=60
            )
            return answer.status_code

        with ThreadPoolExecutor(len(pixels)) as pool:  # eight requests at once
            assert list(pool.map(predict, pixels)) == [200] * len(pixels)
        metrics = httpx.get(f"{url}/metrics", headers=auth).text
    passes = float(metrics.split("dlab_batch_size_count ")[1].split()[0])
    at_most_two = float(metrics.split('dlab_batch_size_bucket{le="2.0"} ')[1].split()[0])
    assert at_most_two == passes >= len(pixels) / 2  # no forward pass took more than two
