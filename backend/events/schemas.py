"""Response bodies of the deliveries routes (camelCase on the wire)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from backend.events.models import Delivery
from backend.events.webhooks import webhook_id
from backend.jobs.schemas import CamelModel


class DeliveryOut(CamelModel):
    id: uuid.UUID
    webhook_id: str = Field(description="The `webhook-id` header: the same on every attempt and redelivery.")
    event_id: int
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last HTTP status, if it answered.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="While pending: when the next attempt is due.")
    created_at: datetime
    delivered_at: datetime | None


def delivery_out(delivery: Delivery, event_type: str) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        webhook_id=webhook_id(delivery.id),
        event_id=delivery.event_id,
        event_type=event_type,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
    )
