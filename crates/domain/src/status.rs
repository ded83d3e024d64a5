//! Lifecycle states stored in PostgreSQL as text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Returns the text stored in the database and shown in the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }
    };
}

text_enum!(
    /// State of one attachment. `Succeeded` and `Failed` are final.
    AttachmentStatus {
        /// Accepted and waiting for a fetch attempt, possibly a scheduled retry.
        Pending => "pending",
        /// Stored in the attachment store with its size and sha256.
        Succeeded => "succeeded",
        /// Failed for good, with an error code and message.
        Failed => "failed",
    }
);

impl AttachmentStatus {
    /// Tells whether no further fetch attempt will change this state.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

text_enum!(
    /// State of a task, derived from its attachments once all are final.
    TaskStatus {
        /// At least one attachment is still pending.
        Pending => "pending",
        /// Every attachment succeeded.
        Succeeded => "succeeded",
        /// Some attachments succeeded and some failed.
        PartiallyFailed => "partially_failed",
        /// Every attachment failed.
        Failed => "failed",
    }
);

impl TaskStatus {
    /// Derives the final task status from its attachment counts.
    pub fn from_counts(succeeded: usize, failed: usize) -> Self {
        match (succeeded, failed) {
            (_, 0) => Self::Succeeded,
            (0, _) => Self::Failed,
            _ => Self::PartiallyFailed,
        }
    }
}

text_enum!(
    /// State of a task's callback.
    CallbackStatus {
        /// Waiting for its first attempt or a scheduled retry.
        Pending => "pending",
        /// The customer answered with a 2xx status.
        Delivered => "delivered",
        /// Attempts are exhausted or the customer answered 410 Gone. An
        /// operator can replay it.
        Dead => "dead",
    }
);

impl CallbackStatus {
    /// Tells whether no further delivery attempt will happen on its own.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}
