"""The recommender routes of `dlab serve`.

POST /recommend   {"user": "196", "k": 10, "exclude_seen": true}: the top-k items with titles,
                  scores and genres, and what the user rated highest
POST /predict     {"user": "196", "item": "242"}: one predicted rating (or ranking score)
GET  /users       {"users": [...]}: the user ids the model knows (the page's picker)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from dlab.errors import InputError
from dlab.serve import schema

MAX_K = 200


def recommend_routes(
    app: FastAPI, backend: Any, worker: Any, client_error: type, read_json: Any
) -> Any:
    """Add /recommend and /users to `app`; return the /predict handler of a recommender."""
    if backend.run is None:
        raise InputError("a recommender is served from its run directory (it needs seen.npz)")
    recommender = backend.run.recommender()

    def _id(body: dict, field: str) -> str:
        value = body.get(field)
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise client_error(422, f"{field}: give the {field}'s id, a string or an integer")
        if len(str(value)) > 200:
            raise client_error(422, f"{field}: an id of over 200 characters")
        return str(value)

    async def answer(fn: Any, *args: Any) -> dict:
        try:
            return await worker.run(fn, *args)
        except InputError as exc:  # an unknown id the recipe refuses
            raise client_error(404, str(exc)) from None

    @app.post(
        "/recommend",
        responses=schema.errors(400, 404, 415, 422, 503, 504),
        openapi_extra=schema.body(schema.RECOMMEND),
    )
    async def recommend(request: Request) -> dict:
        body = await read_json(request)
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise client_error(422, f"k: should be an integer in [1, {MAX_K}] (got {k!r})")
        seen = body.get("exclude_seen", True)
        if not isinstance(seen, bool):
            raise client_error(422, "exclude_seen: should be true or false")
        return await answer(recommender.recommend, _id(body, "user"), k, seen)

    @app.get("/users", responses=schema.errors())
    async def users() -> dict:
        return {"users": recommender.details.users}

    async def predict(request: Request) -> dict:
        body = await read_json(request)
        return await answer(recommender.rate, _id(body, "user"), _id(body, "item"))

    return predict
