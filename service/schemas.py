"""Request and response bodies of the recommendation endpoints (strict: "3" is not an int)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.data.formats import MAX_ID_CHARS

ExternalId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
"""A user or item id as in the training data (prepare refuses longer ones)."""


FilterList = Annotated[list[ExternalId], Field(max_length=100_000)]


class Filters(BaseModel):
    """Business filters, exact on every recommendation call; the names are the Python API's
    (Model.recommend's filter_items and candidates)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    filter_items: FilterList | None = None
    """Items never to return (out of stock, already shown); unknown ids are ignored.
    `exclude_items`, its former name, is accepted too (deprecated)."""
    candidates: FilterList | None = None
    """If given, the only items that may be returned (an allow-list); unknown ids are ignored.
    Filters that leave fewer than k items are a 422."""

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, data):
        if isinstance(data, dict) and "exclude_items" in data:
            if "filter_items" in data:
                raise ValueError("give filter_items or exclude_items (its former name), not both")
            data = {**data, "filter_items": data["exclude_items"]}
            del data["exclude_items"]
        return data


class RecommendRequest(Filters):
    model: str = Field("latest", min_length=1, max_length=300)
    """A model id from GET /models, `latest` (the most recently written checkpoint) or
    `latest:DATASET` (the most recently written one trained on that dataset)."""
    user: ExternalId | None = None
    """The user's external id, as in the training data."""
    items: list[ExternalId] | None = Field(None, min_length=1, max_length=10_000)
    """An item history (external item ids) to fit the user's query to (fold-in): for a user
    the model never saw, or, with `user`, on top of what the model knows of them. Unknown
    item ids are reported in `fold_in.unknown_items`, not fatal."""
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    """Leave out the items the user interacted with in train and validation (and the given
    history)."""
    fallback: Literal["none", "popularity"] = "none"
    """For a user the model does not know: `none` → 404; `popularity` → most popular items."""
    exact: bool = False
    """Score every item even where the model's catalogue is searched through ANN."""

    @model_validator(mode="after")
    def _user_or_items(self):
        if self.user is None and self.items is None:
            raise ValueError("give `user`, `items` (a history to fold in), or both")
        return self


class BatchRecommendRequest(Filters):
    model: str = Field("latest", min_length=1, max_length=300)
    users: list[ExternalId] = Field(..., min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=1000)
    """users × k is bounded too (ADASIR_MAX_BATCH_ITEMS, 100,000 by default)."""
    exclude_seen: bool = True
    fallback: Literal["none", "popularity"] = "none"
    """For users the model does not know: `none` → they are answered with no items and an
    `error`; `popularity` → the most popular items."""
    exact: bool = False
    """Score every item even where the model's catalogue is searched through ANN."""


class SimilarRequest(Filters):
    model: str = Field("latest", min_length=1, max_length=300)
    items: list[ExternalId] = Field(..., min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=1000)


class ScoredItem(BaseModel):
    item: str
    score: float
    """The model's score (cosine or dot product); for the popularity fallback, the item's
    number of train interactions."""


class FoldIn(BaseModel):
    items_used: int
    """History items the query was fitted to (known ones, plus the user's own)."""
    unknown_items: list[str]
    """History items the model does not know (ignored)."""


class UserRecommendations(BaseModel):
    user: str | None
    fallback: Literal["popularity"] | None
    """`popularity` when the model did not know the user and a fallback was asked for."""
    items: list[ScoredItem]
    fold_in: FoldIn | None = None
    """Set when the query was fitted to a given history."""
    error: str | None = None
    """Batch only: why this user has no items (an unknown user without a fallback)."""


class RecommendResponse(UserRecommendations):
    model: str


class BatchRecommendResponse(BaseModel):
    model: str
    results: list[UserRecommendations]


class SimilarItems(BaseModel):
    item: str
    items: list[ScoredItem]
    """The most similar items by the cosine of their vectors, the item itself left out."""


class SimilarResponse(BaseModel):
    model: str
    results: list[SimilarItems]
