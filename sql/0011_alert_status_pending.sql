-- AlertsService: an alert whose condition holds but has not yet held for
-- its rule's duration_minutes is PENDING (proto AlertStatus). The data
-- model's alert_status has no such value; it is added here, in a migration
-- of its own, because a new enum value cannot be used in the transaction
-- that adds it.
ALTER TYPE alert_status ADD VALUE IF NOT EXISTS 'pending';
