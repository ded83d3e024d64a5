-- A worker claims a callback attempt before sending it, so two copies of
-- one job cannot both POST. The lease expires on its own if the worker dies
-- mid-send, and the job's redelivery then proceeds.
ALTER TABLE callbacks ADD COLUMN lease_until timestamptz;
