-- A team's AWS delegated-access settings.
ALTER TABLE teams ADD COLUMN aws_external_id text UNIQUE;
-- The team's 12-digit account ID; delegation is active while
-- aws_linked_at is set.
ALTER TABLE teams ADD COLUMN aws_account_id text;
ALTER TABLE teams ADD COLUMN aws_linked_at timestamptz;
-- Accounts the team's buckets may belong to; when not empty, every
-- GetObject for the team carries S3's expected-bucket-owner check.
ALTER TABLE teams ADD COLUMN aws_bucket_owners text[] NOT NULL DEFAULT '{}';
