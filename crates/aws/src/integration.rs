//! A team's delegated-access settings: its External ID, the policies shown
//! to it, and the checks run before delegation is activated.
//!
//! Activation assumes the team's role three times: with the team's External
//! ID (must succeed), with none, and with a wrong one (both must be
//! refused). A role that lets either of the last two in does not enforce
//! the External ID, so anyone who learned its ARN could have us read the
//! team's objects for them; activation is then refused with the condition
//! the trust policy lacks.

use rand::Rng;
use serde_json::{Value, json};

use crate::credentials::{AssumeError, Aws};

/// Characters of a generated External ID after its prefix.
const EXTERNAL_ID_LEN: usize = 32;

/// Generates a team's External ID: `attache-` and 32 random letters and
/// digits, within AWS's limits (2 to 1,224 characters of `[\w+=,.@:/-]`).
pub fn generate_external_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(EXTERNAL_ID_LEN)
        .map(char::from)
        .collect();
    format!("attache-{suffix}")
}

/// Checks that `account_id` is a 12-digit AWS account ID.
pub fn validate_account_id(account_id: &str) -> Result<(), String> {
    if account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "`{account_id}` is not an AWS account ID: give the 12 digits shown in your AWS console's account menu, without dashes"
        ))
    }
}

impl Aws {
    /// Returns the principal that customers' trust policies name.
    pub fn principal_arn(&self) -> String {
        self.args.aws_principal_arn.clone().unwrap_or_else(|| {
            format!(
                "arn:aws:iam::{}:root",
                self.args.aws_account_id.as_deref().unwrap_or_default()
            )
        })
    }

    /// Our AWS account ID and the role name every team uses.
    pub fn account_and_role(&self) -> (&str, &str) {
        (
            self.args.aws_account_id.as_deref().unwrap_or_default(),
            &self.args.aws_role_name,
        )
    }

    /// Returns the trust policy the team's role needs.
    pub fn trust_policy(&self, external_id: &str) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": self.principal_arn()},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
            }]
        })
    }

    /// Checks a team's role before delegation is activated; see the module
    /// documentation.
    pub async fn check_link(&self, account_id: &str, external_id: &str) -> Result<(), LinkError> {
        let role_arn = self.role_arn(account_id);
        match self.assume(&role_arn, Some(external_id)).await {
            Ok(_) => {}
            Err(AssumeError::Denied(detail)) => {
                return Err(LinkError::CannotAssume {
                    role_arn,
                    detail,
                    principal: self.principal_arn(),
                });
            }
            Err(AssumeError::Unavailable(detail)) => return Err(LinkError::Unavailable(detail)),
        }
        let wrong = generate_external_id();
        for probe in [None, Some(wrong.as_str())] {
            match self.assume(&role_arn, probe).await {
                Ok(_) => return Err(LinkError::ExternalIdNotEnforced { role_arn }),
                Err(AssumeError::Denied(_)) => {}
                Err(AssumeError::Unavailable(detail)) => {
                    return Err(LinkError::Unavailable(detail));
                }
            }
        }
        Ok(())
    }
}

/// Returns the permission policy a team's role needs to let us read `bucket`.
pub fn permission_policy(bucket: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/*")
        }]
    })
}

/// The reason a team's role cannot be activated.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "could not assume {role_arn} with your External ID ({detail}): create the role with that name in your account, with a trust policy that names {principal} and requires your External ID (GET /v1/integrations/aws shows the policy)"
    )]
    CannotAssume {
        role_arn: String,
        detail: String,
        principal: String,
    },
    #[error(
        "{role_arn} can be assumed without your External ID or with a wrong one, so anyone who learns its ARN could use it through us: add the condition {{\"StringEquals\": {{\"sts:ExternalId\": \"<your External ID>\"}}}} to its trust policy, then try again"
    )]
    ExternalIdNotEnforced { role_arn: String },
    #[error("STS is unavailable ({0}): try again in a minute")]
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_unique_and_allowed_by_aws() {
        let first = generate_external_id();
        let second = generate_external_id();
        assert_ne!(first, second);
        assert_eq!(first.len(), "attache-".len() + EXTERNAL_ID_LEN);
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
    }

    #[test]
    fn account_ids_must_be_twelve_digits() {
        assert!(validate_account_id("123456789012").is_ok());
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "1234-5678-9012",
            "12345678901a",
        ] {
            assert!(
                validate_account_id(bad).unwrap_err().contains("12 digits"),
                "{bad}"
            );
        }
    }
}
