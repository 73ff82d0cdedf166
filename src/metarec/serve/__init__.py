"""Serving: FastAPI app, SQL storage with migrations, ANN retrieval, the web page."""
