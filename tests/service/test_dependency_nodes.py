"""POST /search resolves few dependency nodes: FastAPI pays for each one per request."""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.routes.search import router


def nodes(dependant: Dependant) -> list[str]:
    """Every Depends node under a route, repeats included, as FastAPI walks them."""
    found = []
    for sub in dependant.dependencies:
        found.append(getattr(sub.call, "__name__", repr(sub.call)))
        found += nodes(sub)
    return found


def test_search_resolves_one_node_per_dependency() -> None:
    route = next(r for r in router.routes if isinstance(r, APIRoute) and r.path == "/search")

    # The snapshot, the embedder and the state, each read straight from the request:
    # no chain through get_state / get_encoder under them (9 nodes before).
    assert sorted(nodes(route.dependant)) == ["get_embedder", "get_snapshot", "get_state"]
