"""rec_core: the recommender library a backend imports. It never imports Dagster."""
