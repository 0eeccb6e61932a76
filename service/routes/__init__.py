"""One router per resource: health, models, recommendations, jobs."""
