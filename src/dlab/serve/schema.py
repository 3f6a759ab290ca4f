"""The OpenAPI description of `dlab serve`'s routes: request bodies and every error they answer.

The routes read their bodies by hand (so each refusal names the field in its own words), which
leaves FastAPI's generated schema without request bodies or error responses. These pieces fill
it in, so `/docs` shows what to send and a schema-driven fuzzer (Schemathesis, in the tests) can
generate requests and check every answer against the schema.
"""

from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
WHY = {
    400: "malformed JSON",
    401: "a missing or wrong token",
    404: "a route this model does not answer, or an id the recipe refuses",
    413: "a body, text or batch over the limits",
    415: "a content type the route does not read",
    422: "a field with the wrong type or value",
    500: "an unexpected error (logged and counted)",
    503: "the generation queue is full (Retry-After)",
    504: "a generation ran out of time",
}
NUMBERS = {"type": "array", "items": {}}  # nested lists of numbers, checked by the route

PREDICT = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"inputs": NUMBERS},
            "required": ["inputs"],
            "description": "one input shaped like the model's input, or a batch of them",
        },
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        {
            "type": "object",
            "properties": {"texts": {"type": "array", "items": {"type": "string"}}},
            "required": ["texts"],
        },
        {
            "type": "object",
            "properties": {
                "user": {"type": ["string", "integer"]},
                "item": {"type": ["string", "integer"]},
            },
            "required": ["user", "item"],
            "description": "recommenders: one rating",
        },
    ]
}
GENERATE = {
    "type": "object",
    "properties": {
        "prompt": {"type": ["string", "null"]},
        "text": {"type": "string", "description": "translation models: the sentence"},
        "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 1000},
        "temperature": {"type": "number", "minimum": 0, "maximum": 10},
        "top_k": {"type": ["integer", "null"], "minimum": 1},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0},
        "beam": {"type": "integer", "minimum": 1, "maximum": 16},
    },
}
RECOMMEND = {
    "type": "object",
    "properties": {
        "user": {"type": ["string", "integer"]},
        "k": {"type": "integer", "minimum": 1, "maximum": 200},
        "exclude_seen": {"type": "boolean"},
    },
    "required": ["user"],
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering these error codes (and 401, 413, 500 everywhere
    the guard and body limit apply)."""
    every = sorted({*codes, 401, 413, 500})
    return {
        code: {
            "description": WHY[code],
            "content": {"application/json": {"schema": ERROR}},
        }
        for code in every
    }


def body(schema: dict[str, Any], upload: bool = False) -> dict[str, Any]:
    """`openapi_extra=` describing a JSON request body (and a multipart upload if `upload`)."""
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if upload:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        }
    return {"requestBody": {"required": True, "content": content}}
