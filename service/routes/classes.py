"""GET /classes: the class prototypes of the live snapshot."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import SnapshotDep
from service.schemas import ClassesResponse, ClassOut, error_responses

router = APIRouter(prefix="/classes", tags=["classes"])


@router.get(
    "",
    summary="Classes of the live index with member counts (and which are zero-shot)",
    response_model=ClassesResponse,
    responses=error_responses(503),
)
async def list_classes(snapshot: SnapshotDep) -> ClassesResponse:
    table = snapshot.prototypes
    options = table.options
    return ClassesResponse(
        index_version=snapshot.version,
        class_field=options.class_field,
        shots=options.shots,
        seed=options.seed,
        text_weight=options.text_weight,
        classes=[
            ClassOut(
                name=info.name,
                members=info.members,
                support=info.support,
                zero_shot=info.zero_shot,
                description=info.description,
            )
            for info in table.classes
        ],
    )
