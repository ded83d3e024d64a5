//! Messages carried by RabbitMQ.
//!
//! A message carries ids and an attempt number, never state: PostgreSQL is the
//! source of truth. The JSON is versioned so that a fleet in the middle of a
//! rolling upgrade can tell a message it cannot read from a corrupt one.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{AttachmentId, CallbackId};

/// The message format version this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// Max attachments per fetch message. Fetch jobs travel in groups, one
/// message per group instead of one per attachment, and a task of many
/// attachments still spreads over several workers.
pub const FETCH_GROUP_SIZE: usize = 16;

/// One job, as published to a work queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobMessage {
    /// Fetch one attachment.
    Fetch(FetchJob),
    /// Fetch several attachments of one task, each as its own job.
    FetchGroup(FetchGroupJob),
    /// Deliver one task's callback.
    Callback(CallbackJob),
}

/// A request to fetch one attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchJob {
    /// The attachment to fetch.
    pub attachment_id: AttachmentId,
    /// How many attempts had finished when this job was queued. A worker
    /// skips a job whose number no longer matches the row, because a newer
    /// job for the same attachment is scheduled.
    pub attempt: u32,
}

/// Fetch jobs carried by one message, of one task or of several. Each job
/// is loaded, fetched and recorded on its own, so the group only saves
/// messages and outbox rows. Workers of a release that predates groups
/// dead-letter them, so fetch-workers are upgraded before the producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchGroupJob {
    /// At most [`FETCH_GROUP_SIZE`] jobs.
    pub jobs: Vec<FetchJob>,
}

/// A request to deliver one callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackJob {
    /// The callback to deliver.
    pub callback_id: CallbackId,
    /// How many attempts had finished when this job was queued.
    pub attempt: u32,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    #[serde(flatten)]
    job: JobMessage,
}

/// Why a message body could not be decoded. Such a message is dead-lettered.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("message is not a valid job: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message version {found} is not supported; this build reads version {MESSAGE_VERSION}")]
    UnsupportedVersion { found: u32 },
}

impl JobMessage {
    /// Splits fetch jobs into messages: groups of at most
    /// [`FETCH_GROUP_SIZE`], and a lone job as a plain [`JobMessage::Fetch`],
    /// which every release reads.
    pub fn fetches(jobs: &[FetchJob]) -> Vec<Self> {
        jobs.chunks(FETCH_GROUP_SIZE)
            .map(|chunk| match chunk {
                [job] => Self::Fetch(*job),
                _ => Self::FetchGroup(FetchGroupJob {
                    jobs: chunk.to_vec(),
                }),
            })
            .collect()
    }

    /// Repacks `messages` into as few as it can: their fetch jobs, in order,
    /// into groups as [`JobMessage::fetches`] makes them, after the other
    /// messages, which are kept as they are.
    pub fn pack(messages: impl IntoIterator<Item = Self>) -> Vec<Self> {
        let mut packed = Vec::new();
        let mut fetches = Vec::new();
        for message in messages {
            match message {
                Self::Fetch(job) => fetches.push(job),
                Self::FetchGroup(group) => fetches.extend(group.jobs),
                other => packed.push(other),
            }
        }
        packed.extend(Self::fetches(&fetches));
        packed
    }

    /// Serializes the message with its version.
    pub fn encode(&self) -> Vec<u8> {
        let envelope = Envelope {
            version: MESSAGE_VERSION,
            job: self.clone(),
        };
        serde_json::to_vec(&envelope)
            .expect("a job message always serializes: ids and integers only")
    }

    /// Serializes the message with its version as a JSON value, for the
    /// outbox table.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Envelope {
            version: MESSAGE_VERSION,
            job: self.clone(),
        })
        .expect("a job message always serializes: ids and integers only")
    }

    /// Parses a message stored as JSON, as [`JobMessage::to_json`] writes it.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DecodeError> {
        Self::decode(value.to_string().as_bytes())
    }

    /// Parses a message body, checking its version first.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let VersionOnly { version } = serde_json::from_slice(body)?;
        if version != MESSAGE_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let envelope: Envelope = serde_json::from_slice(body)?;
        Ok(envelope.job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_job_round_trips() {
        let job = JobMessage::Fetch(FetchJob {
            attachment_id: AttachmentId::new(),
            attempt: 3,
        });
        assert_eq!(JobMessage::decode(&job.encode()).unwrap(), job);
    }

    fn fetch_jobs(count: usize) -> Vec<FetchJob> {
        (0..count)
            .map(|_| FetchJob {
                attachment_id: AttachmentId::new(),
                attempt: 0,
            })
            .collect()
    }

    #[test]
    fn pack_merges_fetch_jobs_keeps_others() {
        let jobs = fetch_jobs(FETCH_GROUP_SIZE + 3);
        let callback = JobMessage::Callback(CallbackJob {
            callback_id: CallbackId::new(),
            attempt: 2,
        });
        let messages = vec![
            JobMessage::FetchGroup(FetchGroupJob {
                jobs: jobs[..5].to_vec(),
            }),
            callback.clone(),
            JobMessage::Fetch(jobs[5]),
            JobMessage::FetchGroup(FetchGroupJob {
                jobs: jobs[6..].to_vec(),
            }),
        ];
        assert_eq!(
            JobMessage::pack(messages),
            vec![
                callback,
                JobMessage::FetchGroup(FetchGroupJob {
                    jobs: jobs[..FETCH_GROUP_SIZE].to_vec(),
                }),
                JobMessage::FetchGroup(FetchGroupJob {
                    jobs: jobs[FETCH_GROUP_SIZE..].to_vec(),
                }),
            ]
        );
    }

    #[test]
    fn fetches_group_jobs_but_not_one() {
        let jobs = fetch_jobs(FETCH_GROUP_SIZE + 1);
        let messages = JobMessage::fetches(&jobs);
        assert_eq!(
            messages,
            vec![
                JobMessage::FetchGroup(FetchGroupJob {
                    jobs: jobs[..FETCH_GROUP_SIZE].to_vec(),
                }),
                JobMessage::Fetch(jobs[FETCH_GROUP_SIZE]),
            ]
        );
        for message in &messages {
            assert_eq!(&JobMessage::decode(&message.encode()).unwrap(), message);
        }
        let value = messages[0].to_json();
        assert_eq!(value["type"], "fetch_group");
        assert_eq!(value["jobs"][0]["attempt"], 0);
    }

    #[test]
    fn encoded_job_names_version_and_type() {
        let job = JobMessage::Callback(CallbackJob {
            callback_id: CallbackId::new(),
            attempt: 0,
        });
        let value: serde_json::Value = serde_json::from_slice(&job.encode()).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["type"], "callback");
        assert_eq!(job.to_json(), value);
    }

    #[test]
    fn newer_version_is_rejected() {
        let body = br#"{"version":2,"type":"fetch","attachment_id":"0190c1a8-0000-7000-8000-000000000000","attempt":0}"#;
        let error = JobMessage::decode(body).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::UnsupportedVersion { found: 2 }
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            JobMessage::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            JobMessage::decode(br#"{"version":1,"type":"unknown"}"#),
            Err(DecodeError::Malformed(_))
        ));
    }
}
