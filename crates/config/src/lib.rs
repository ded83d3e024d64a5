//! Settings shared by every Attaché binary.
//!
//! Each binary flattens these groups into its own clap parser, so every
//! setting is a flag with an `ATTACHE_*` environment variable as fallback and
//! a default that suits a local run against the services on loopback.
//! [`parse_command_line`] parses them and names the environment variable
//! behind an invalid value.

use std::ffi::OsString;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Command, FromArgMatches, ValueEnum};

/// PostgreSQL connection and pool settings.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "ATTACHE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/attache"
    )]
    pub database_url: String,

    /// Maximum number of connections in this process's pool.
    #[arg(long, env = "ATTACHE_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Maximum time a query waits for a free pooled connection before it fails.
    #[arg(long, env = "ATTACHE_DATABASE_WAIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_wait_timeout: Duration,
}

/// RabbitMQ connection and queue settings.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL.
    #[arg(
        long,
        env = "ATTACHE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of every queue and exchange name, so several deployments or
    /// test runs can share one broker.
    #[arg(long, env = "ATTACHE_QUEUE_PREFIX", default_value = "attache")]
    pub queue_prefix: String,

    /// Maximum redeliveries of one message, after which RabbitMQ
    /// dead-letters it. Redeliveries after crashes count too, so a message
    /// that kills its worker cannot loop forever.
    #[arg(long, env = "ATTACHE_QUEUE_DELIVERY_LIMIT", default_value_t = 20)]
    pub queue_delivery_limit: u32,

    /// The broker's `consumer_timeout` (RabbitMQ's default is 30 minutes):
    /// a delivery left unacknowledged longer closes the worker's channel.
    /// Workers warn at start when a job could outlive it.
    #[arg(long, env = "ATTACHE_BROKER_CONSUMER_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub broker_consumer_timeout: Duration,
}

/// Logging settings.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log output format. Filter with `RUST_LOG`, for example `info` or
    /// `info,attache_queue=debug`.
    // Global, so that it is accepted after a subcommand such as
    // `attache-producer serve` as well as before it.
    #[arg(long, global = true, env = "ATTACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parses a duration written as a number and a unit: `250ms`, `30s`, `5m`
/// or `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write it as 250ms, 30s, 5m or 2h"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("`{text}` does not start with a whole number: write 250ms, 30s, 5m or 2h")
    })?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!(
            "`{text}` has an unknown unit `{unit}`: use ms, s, m or h"
        )),
    }
}

/// Parses a CIDR range such as `127.0.0.0/8` into `T` (for example
/// `ipnet::IpNet`), first checking the address and the prefix length so that
/// the error names the part that is wrong.
pub fn parse_cidr<T: FromStr>(text: &str) -> Result<T, String> {
    let (address, prefix) = text.split_once('/').ok_or_else(|| {
        format!("`{text}` has no prefix length: write a range such as 127.0.0.0/8")
    })?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{text}` starts with `{address}`, which is not an IP address"))?;
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix.parse().map_err(|_| {
        format!("`{text}` has the prefix length `{prefix}`, which is not a number from 0 to {max_prefix}")
    })?;
    if prefix > max_prefix {
        return Err(format!(
            "`{text}` has the prefix length {prefix}, but an {} range allows at most {max_prefix}",
            if address.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not a valid CIDR range such as 127.0.0.0/8"))
}

/// Parses the process's arguments with `command` into `P`, exiting with
/// clap's message on an error as [`clap::Parser::parse`] does. When an
/// invalid value came from an environment variable, the message names it.
pub fn parse_command_line<P: FromArgMatches>(command: Command) -> P {
    try_parse_from(command, std::env::args_os()).unwrap_or_else(|error| error.exit())
}

/// Parses `arguments` like [`parse_command_line`], returning the error.
pub fn try_parse_from<P: FromArgMatches>(
    mut command: Command,
    arguments: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<P, clap::Error> {
    let arguments: Vec<OsString> = arguments.into_iter().map(Into::into).collect();
    let parsed = command
        .try_get_matches_from_mut(&arguments)
        .and_then(|matches| P::from_arg_matches(&matches));
    parsed.map_err(|error| name_environment_variable(error, &command, &arguments))
}

/// Adds a tip naming the environment variable an invalid value came from:
/// clap names only the flag, which the user may never have typed.
fn name_environment_variable(
    mut error: clap::Error,
    command: &Command,
    arguments: &[OsString],
) -> clap::Error {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let Some(ContextValue::String(invalid_arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    // clap writes the argument as `--long-name <VALUE_NAME>`.
    let Some(long) = invalid_arg
        .split_whitespace()
        .next()
        .and_then(|flag| flag.strip_prefix("--"))
    else {
        return error;
    };
    let typed = arguments.iter().any(|argument| {
        let argument = argument.to_string_lossy();
        argument
            .strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
    });
    let Some(variable) = find_env(command, long) else {
        return error;
    };
    if typed || std::env::var_os(&variable).is_none() {
        return error;
    }
    let tip = format!(
        "the value comes from the environment variable {}: correct or unset it",
        variable.to_string_lossy()
    );
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
}

/// Finds the environment variable of the flag `--{long}` in `command` or
/// its subcommands.
fn find_env(command: &Command, long: &str) -> Option<OsString> {
    let own = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(ToOwned::to_owned);
    own.or_else(|| {
        command
            .get_subcommands()
            .find_map(|subcommand| find_env(subcommand, long))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn parse_duration_rejects_malformed_input() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("whole number"));
    }
}

#[cfg(test)]
mod command_line_tests {
    use std::net::IpAddr;

    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;

    /// A stand-in for `ipnet::IpNet`, which this crate does not depend on.
    #[derive(Clone, Debug, PartialEq)]
    struct Range(IpAddr, u8);

    impl FromStr for Range {
        type Err = ();

        fn from_str(text: &str) -> Result<Self, ()> {
            let (address, prefix) = text.split_once('/').ok_or(())?;
            Ok(Self(
                address.parse().map_err(|_| ())?,
                prefix.parse().map_err(|_| ())?,
            ))
        }
    }

    #[test]
    fn parse_cidr_names_each_problem() {
        assert_eq!(
            parse_cidr::<Range>("127.0.0.0/8"),
            Ok(Range("127.0.0.0".parse().unwrap(), 8))
        );
        let too_long = parse_cidr::<Range>("127.0.0.0/33").unwrap_err();
        assert!(
            too_long.contains("prefix length 33, but an IPv4 range allows at most 32"),
            "{too_long}"
        );
        let too_long_v6 = parse_cidr::<Range>("fd00::/129").unwrap_err();
        assert!(
            too_long_v6.contains("IPv6 range allows at most 128"),
            "{too_long_v6}"
        );
        let no_prefix = parse_cidr::<Range>("127.0.0.1").unwrap_err();
        assert!(no_prefix.contains("has no prefix length"), "{no_prefix}");
        let bad_address = parse_cidr::<Range>("127.0.0/8").unwrap_err();
        assert!(bad_address.contains("not an IP address"), "{bad_address}");
        let bad_prefix = parse_cidr::<Range>("10.0.0.0/x").unwrap_err();
        assert!(
            bad_prefix.contains("not a number from 0 to 32"),
            "{bad_prefix}"
        );
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Serve,
        Wait {
            /// A duration read from `PATH`, which every test process has
            /// and which is never a valid duration. Tests cannot set a
            /// variable of their own, because `set_var` is unsafe.
            #[arg(long, env = "PATH", value_parser = parse_duration)]
            timeout: Option<Duration>,
        },
    }

    #[test]
    fn log_format_is_accepted_after_subcommand() {
        let cli: Cli =
            try_parse_from(Cli::command(), ["test", "serve", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Json);
    }

    #[test]
    fn invalid_environment_value_names_variable() {
        let error = try_parse_from::<Cli>(Cli::command(), ["test", "wait"]).unwrap_err();
        let message = error.render().to_string();
        assert!(message.contains("'--timeout <TIMEOUT>'"), "{message}");
        assert!(
            message.contains("environment variable PATH: correct or unset it"),
            "{message}"
        );

        let typed =
            try_parse_from::<Cli>(Cli::command(), ["test", "wait", "--timeout", "4d"]).unwrap_err();
        let message = typed.render().to_string();
        assert!(!message.contains("environment variable"), "{message}");
    }
}
