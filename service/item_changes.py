"""From an admin request to an acknowledged item change.

An upserted item's photo arrives as base64: it is decoded here, in the API, so a
bad image is a 422 now rather than a failed job later, and its bytes are stored
under ``<index_dir>/uploads/`` (:mod:`service.uploads`), where every worker sharing
the index storage can read them (and /images serves it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from index.changes import ItemChange
from index.snapshot import Snapshot
from models.images import base64_image_bytes
from models.types import CatalogRecord
from service.item_schemas import ItemIn, ItemUpsertIn
from service.jobs import JobQueue
from service.limits import check_base64_size
from service.pending import PendingChanges
from service.settings import Settings
from service.uploads import save_upload


def upsert_change(item_id: str, body: ItemIn, settings: Settings) -> ItemChange:
    """The change storing ``body`` under ``item_id``; its photo checked and saved first.

    UploadTooLargeError / ImageTooLargeError (413) and InvalidImageError (422).
    """
    image_path = None
    if body.image is not None:
        check_base64_size(body.image, settings.max_upload_bytes)
        image_path = save_upload(
            settings.index_dir, base64_image_bytes(body.image), settings.max_image_pixels
        )
    record = CatalogRecord(
        id=item_id,
        metadata=body.metadata,
        image_path=image_path,
        texts=tuple(body.texts),
        recipe=body.recipe.to_recipe() if body.recipe is not None else None,
        label=body.label,
    )
    return ItemChange(item_id, record, datetime.now(UTC))


def upsert_changes(items: Sequence[ItemUpsertIn], settings: Settings) -> list[ItemChange]:
    """:func:`upsert_change` of each batch item in order, in one call: a batch's photos
    are decoded in one threadpool hop, not one each. The first bad item's error is
    raised, as before."""
    return [upsert_change(item.id, item, settings) for item in items]


def delete_change(item_id: str) -> ItemChange:
    return ItemChange(item_id, None, datetime.now(UTC))


def unknown_items(
    snapshot: Snapshot, pending: PendingChanges, item_ids: Sequence[str]
) -> list[str]:
    """The ids among ``item_ids`` that name no item once the pending changes are applied."""
    latest = {entry.change.item_id: entry.change for entry in pending.pending()}
    in_live = snapshot.catalog.get_items([i for i in item_ids if i not in latest])
    return [
        item_id
        for item_id in item_ids
        if (latest[item_id].record is None if item_id in latest else item_id not in in_live)
    ]


def submit(pending: PendingChanges, jobs: JobQueue, changes: Sequence[ItemChange]) -> str:
    """Record the changes (durably, before any reply), then queue the job applying them.

    Should queuing fail (Redis down), the changes stay recorded and the next job
    applies them; the caller gets the 503 and may send them again (PUT and DELETE
    are idempotent)."""
    pending.add(changes)
    return jobs.enqueue_item_changes()
