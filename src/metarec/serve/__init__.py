"""Serving: FastAPI app, SQL storage with migrations, ANN retrieval, the web page.

Needs the `serve` extra. It is checked here, before any submodule imports these packages, so a
core-only install gets one line (`pip install 'metarec[serve]'`) instead of a deep traceback.
"""

from metarec.utils import require

for _module in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "hnswlib", "swagger_ui_bundle"):
    require(_module, "serve")
del _module
