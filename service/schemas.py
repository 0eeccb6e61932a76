"""Request and response bodies of the recommendation endpoints (strict: "3" is not an int)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field("latest", min_length=1, max_length=300)
    """A model id from GET /models, or `latest` (the most recently written checkpoint)."""
    user: str = Field(..., min_length=1, max_length=1000)
    """The user's external id, as in the training data."""
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    """Leave out the items the user interacted with in train and validation."""
    fallback: Literal["none", "popularity"] = "none"
    """For a user the model does not know: `none` → 404; `popularity` → most popular items."""


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field("latest", min_length=1, max_length=300)
    users: list[str] = Field(..., min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=1000)
    """users × k is bounded too (ADASIR_MAX_BATCH_ITEMS, 100,000 by default)."""
    exclude_seen: bool = True
    fallback: Literal["none", "popularity"] = "none"


class ScoredItem(BaseModel):
    item: str
    score: float


class UserRecommendations(BaseModel):
    user: str
    fallback: Literal["popularity"] | None
    """`popularity` when the model did not know the user and a fallback was asked for."""
    items: list[ScoredItem]


class RecommendResponse(UserRecommendations):
    model: str


class BatchRecommendResponse(BaseModel):
    model: str
    results: list[UserRecommendations]
