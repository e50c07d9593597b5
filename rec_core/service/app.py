"""The HTTP API over `Recommender`, and the explorer page, as one FastAPI app.

Routes are thin: they turn query parameters or a JSON body into one `Recommender` call and its
result into JSON. What a request may ask is the library's to judge, so its `ServingError`s come
back with their own message: 404 for an unknown user or item, 501 for a capability whose
artifacts were not materialized, 422 for the rest (k out of range, a bad filter, an unreadable
image), like FastAPI's own validation errors. Anything else is a 500 whose body says only that;
the traceback goes to the service log.

Where a route runs: what only reads memory (recommendations for a known user, similar items,
histories, health, release) is an `async` route, run on the event loop. That work is dictionary
lookups, one index search and a few masks: a few hundred microseconds, mostly holding the GIL,
and a hop to a worker thread would cost about as much again (two thread switches per request).
Text search (a text encoder), cold starts (the user tower) and image search (CLIP) run a model,
and product images are read from disk: those are plain `def` routes on FastAPI's thread pool, so
they never stall the loop. Results are serialized by the declared response model straight from
the `Recommendations` attributes (see `_json`).
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from rec_core.data.paths import image_link
from rec_core.images import DEFAULT_MAX_PIXELS, ImageInputError, load_image
from rec_core.service.live import LiveRecommender
from rec_core.service.security import RequestGate, send_json
from rec_core.serving import (
    FeatureUnavailableError,
    Recommendations,
    RecommendedItem,
    ServingError,
    UnknownItemError,
    UnknownUserError,
)

log = logging.getLogger(__name__)

IMAGE_UPLOAD_PATH = "/search/image"
MULTIPART_OVERHEAD_BYTES = 16 * 1024  # boundaries and part headers around the uploaded file
JSON_BODY_LIMIT_BYTES = 64 * 1024  # features and filters are a few hundred bytes
DEFAULT_K = 10


@dataclass(frozen=True)
class ServiceSettings:
    token: str | None = None  # bearer token every request but /healthz must carry; None: loopback only
    max_upload_bytes: int = 10 * 1024 * 1024  # an uploaded image's encoded size
    max_upload_pixels: int = DEFAULT_MAX_PIXELS  # its width x height, checked from the header before decoding


# ---- request and response models ------------------------------------------------------------------
FilterSpecs = list[dict[str, Any]]
FILTERS_QUERY = (
    'JSON list of filter rules, e.g. [{"rule": "available"}, {"rule": "price_range", "max_price": 50}]; '
    "omitted: the service defaults (available items, and for users nothing they already interacted with)"
)


class ListOptions(BaseModel):
    """k and filters in a JSON body (the alternative to query parameters)."""

    model_config = ConfigDict(extra="forbid")
    k: int = DEFAULT_K
    filters: FilterSpecs | None = Field(None, description=FILTERS_QUERY)


class UserFeatures(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int | None = None
    gender: str | None = None
    preferences: list[str] | str = Field(default_factory=list, description="category names, a list or 'a|b'")


class ColdStartRequest(ListOptions):
    features: UserFeatures


class RecommendationList(BaseModel):
    """A `Recommendations` as JSON: read from its attributes, items through the library's own dataclass."""

    model_config = ConfigDict(from_attributes=True)
    items: list[RecommendedItem]
    requested: int
    reason: str | None = Field(None, description="why fewer than `requested` items came back")
    release_id: str | None = Field(None, description="the release that answered (None for a root without releases)")


class HistoryItem(BaseModel):
    item_id: str
    interaction_type: str
    timestamp: str
    product_name: str | None = None
    category: str | None = None
    discounted_price: float | None = None
    rating: float | None = None


class UserHistoryResponse(BaseModel):
    user_id: str
    items: list[HistoryItem]


# ---- the app --------------------------------------------------------------------------------------
def create_app(live: LiveRecommender, settings: ServiceSettings | None = None) -> FastAPI:
    """The service over `live` (a loaded `Recommender` and its reload loop, started with the app)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        live.start()
        try:
            yield
        finally:
            live.stop()

    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    # Body limits are set per route, not on the app: FastAPI's app-wide limiter sits outside every
    # middleware and would answer a declared oversize body with its own bare message before the gate's.
    app = FastAPI(
        title="rec-platform recommendations",
        lifespan=lifespan,
        description="Recommendations, similar items and search over the published release. "
        "The explorer page is at `/`.",
    )
    app.add_middleware(InternalErrors)
    app.add_middleware(
        RequestGate,
        token=settings.token,
        body_limits={IMAGE_UPLOAD_PATH: upload_limit},
        default_body_limit=JSON_BODY_LIMIT_BYTES,
    )
    _add_error_handlers(app)
    page = resources.files("rec_core.service").joinpath("static", "explorer.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def explorer() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness and readiness: a Recommender is loaded (open without a token, for probes)."""
        return {"status": "ok", "build_id": live.recommender.build_id}

    @app.get("/release")
    async def release() -> dict:
        """The version being served, when it was loaded, and the last reload error (None after a good reload)."""
        return live.status()

    @app.get("/recommendations/{user_id}", response_model=RecommendationList, max_body_size=JSON_BODY_LIMIT_BYTES)
    async def recommend(
        user_id: str,
        k: Annotated[int | None, Query()] = None,
        filters: Annotated[str | None, Query(description=FILTERS_QUERY)] = None,
        body: Annotated[ListOptions | None, Body()] = None,
    ) -> Response:
        """Top-k for a known user; k and filters as query parameters or as a JSON body, not both."""
        k, specs = _list_options(k, filters, body)
        return _json(live.recommender.recommend(user_id, k, specs))

    @app.post("/recommendations", response_model=RecommendationList, max_body_size=JSON_BODY_LIMIT_BYTES)
    def recommend_for_features(request: ColdStartRequest) -> Response:
        """Top-k for a new user from their features (age, gender, stated preferences) alone."""
        features = request.features.model_dump()
        return _json(live.recommender.recommend_for_features(features, request.k, request.filters))

    @app.get("/items/{item_id}/similar", response_model=RecommendationList)
    async def similar_items(
        item_id: str,
        k: Annotated[int | None, Query()] = None,
        filters: Annotated[str | None, Query(description=FILTERS_QUERY)] = None,
    ) -> Response:
        k, specs = _list_options(k, filters, None)
        return _json(live.recommender.similar_items(item_id, k, specs))

    @app.get(
        "/items/{item_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"description": "the item has no product image"}},
    )
    def item_image(item_id: str) -> Response:
        """The item's product image (the product_images asset's file), for the explorer's cards."""
        try:
            data = (live.root / image_link(item_id)).read_bytes()
        except FileNotFoundError:
            raise UnknownItemError(
                f"item '{item_id}' has no product image; materialize the product_images asset"
            ) from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/search", response_model=RecommendationList)
    def search(
        q: str,
        k: Annotated[int | None, Query()] = None,
        filters: Annotated[str | None, Query(description=FILTERS_QUERY)] = None,
    ) -> Response:
        """Exact, then prefix product-name matches, then semantic matches on name and description."""
        k, specs = _list_options(k, filters, None)
        return _json(live.recommender.search_by_text(q, k, specs))

    @app.post(
        IMAGE_UPLOAD_PATH,
        response_model=RecommendationList,
        max_body_size=upload_limit,
        form_limits={"max_files": 1, "max_fields": 0},
    )
    def search_by_image(
        file: Annotated[UploadFile, File(description="an image file")],
        k: Annotated[int | None, Query()] = None,
        filters: Annotated[str | None, Query(description=FILTERS_QUERY)] = None,
    ) -> Response:
        """Items whose CLIP image embedding is closest to the uploaded image's.

        The upload's size and pixel count are checked before it is decoded (`rec_core.images.load_image`).
        """
        k, specs = _list_options(k, filters, None)
        data = file.file.read(settings.max_upload_bytes + 1)
        try:
            picture = load_image(
                data,
                max_pixels=settings.max_upload_pixels,
                max_bytes=settings.max_upload_bytes,
                name=f"the uploaded file '{file.filename}'",
            )
        except ImageInputError as exc:
            raise _Invalid(str(exc)) from None
        return _json(live.recommender.search_by_image(picture, k, specs))

    @app.get("/users", response_model=list[str])
    async def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[str]:
        """User ids with the most interactions first (for picking a user in the explorer)."""
        return live.history.active_users(limit)

    @app.get("/users/{user_id}/history", response_model=UserHistoryResponse)
    async def history(user_id: str, n: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        """The user's latest interactions, newest first."""
        source = live.recommender.feature_source
        if source.user_profile(user_id) is None and source.user_embedding(user_id) is None:
            raise UnknownUserError(f"unknown user '{user_id}'")
        return {"user_id": user_id, "items": live.history.recent(user_id, n)}

    return app


class _Invalid(ServingError):
    """A request the service itself refuses (the library's other errors keep their own class)."""


def _list_options(k: int | None, filters: str | None, body: ListOptions | None) -> tuple[int, FilterSpecs | None]:
    """(k, filter specs) from query parameters or a body; the library checks their values."""
    if body is not None:
        if k is not None or filters is not None:
            raise _Invalid("give k and filters either as query parameters or in a JSON body, not both")
        return body.k, body.filters
    if filters is None:
        return (DEFAULT_K if k is None else k), None
    try:
        specs = json.loads(filters)
    except json.JSONDecodeError as exc:
        raise _Invalid(
            f"filters: not valid JSON ({exc.msg} at character {exc.pos}); expected a list of rules like "
            '[{"rule": "price_range", "max_price": 50}]'
        ) from None
    if not isinstance(specs, list):
        raise _Invalid(f"filters: expected a JSON list of rules, got {type(specs).__name__}")
    return (DEFAULT_K if k is None else k), specs


def _json(result: Recommendations) -> Response:
    """The response body, serialized by pydantic from the result's attributes (`to_dict` and FastAPI's own
    path both go through `dataclasses.asdict`, which costs more than the search itself)."""
    return Response(
        RecommendationList.model_validate(result, from_attributes=True).model_dump_json(), media_type="application/json"
    )


def _add_error_handlers(app: FastAPI) -> None:
    def status_of(exc: ServingError) -> int:
        if isinstance(exc, (UnknownUserError, UnknownItemError)):
            return 404
        if isinstance(exc, FeatureUnavailableError):
            return 501
        return 422

    @app.exception_handler(ServingError)
    async def serving_error(_request: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


class InternalErrors:
    """ASGI middleware: an unexpected exception becomes a 500 that says nothing of it, logged here with its
    traceback. (A FastAPI handler for `Exception` would answer the same, but the exception then reaches
    the server, which drops the connection: a keep-alive client's next request would fail.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started or scope["type"] != "http":
                raise
            await send_json(send, 500, "internal server error; the service log has the details")
