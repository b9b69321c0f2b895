//! A delivery decoded: whom its events go to ([`Envelope`], read from the
//! message properties whatever the body says) and either an [`Accepted`]
//! job, ready to run, or every problem that makes it unacceptable.

use super::admission::{self, unix_now, Admission, Expected, Refusal};
use super::JobContext;
use buildbot_protocol::amqp::HEADER_DELIVERY_COUNT;
use buildbot_protocol::{decode_job_with_limit, Job};
use lapin::types::AMQPValue;
use lapin::BasicProperties;

/// Where a delivery's events go and whom they name.
pub(super) struct Envelope {
    pub(super) job_id: String,
    pub(super) attempt: u32,
    pub(super) reply_to: Option<String>,
    /// The broker delivers this message again (an earlier worker of it
    /// stopped before acking).
    pub(super) redelivered: bool,
}

impl Envelope {
    pub(super) fn of(properties: &BasicProperties, redelivered: bool) -> Self {
        let job_id = properties
            .correlation_id()
            .as_ref()
            .or(properties.message_id().as_ref())
            .map(ToString::to_string)
            .unwrap_or_default();
        Self {
            job_id,
            attempt: attempt_of(properties),
            reply_to: properties.reply_to().as_ref().map(ToString::to_string),
            redelivered,
        }
    }
}

/// 1 for a first delivery; quorum queues count earlier deliveries in
/// `x-delivery-count`.
fn attempt_of(properties: &BasicProperties) -> u32 {
    let earlier = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(HEADER_DELIVERY_COUNT))
        .and_then(amqp_integer)
        .unwrap_or(0);
    u32::try_from(earlier.saturating_add(1)).unwrap_or(u32::MAX)
}

fn amqp_integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// A job that passed every check, with the reply queue its events go to.
pub(super) struct Accepted {
    pub(super) job: Job,
    pub(super) reply_to: String,
    /// The signed job's nonce, on a worker with trusted keys.
    pub(super) admission: Option<Admission>,
}

/// The accepted job, or why it is refused: on a worker with trusted keys
/// first the signature and its envelope ([`admission`](super::admission)),
/// then every problem of the body and the message (a missing `reply_to`)
/// in one list.
pub(super) fn decode(
    data: &[u8],
    envelope: &Envelope,
    context: &JobContext,
) -> Result<Accepted, Refusal> {
    let settings = &context.settings;
    let admission = if settings.trusted_keys.is_empty() {
        None
    } else if data.len() > settings.max_job_bytes {
        // Not parsed at all: the size check the body's decoding does.
        return Err(Refusal::Ignored(format!(
            "{} bytes, more than --max-job-bytes",
            data.len()
        )));
    } else {
        let expected = Expected {
            trusted_keys: &settings.trusted_keys,
            queue: &settings.queue,
            reply_to: envelope.reply_to.as_deref(),
            max_validity: settings.max_signed_validity,
            redelivered: envelope.redelivered,
            now: unix_now(),
        };
        Some(admission::admit(data, &expected, &context.nonces)?)
    };
    let decoded = decode_job_with_limit(data, settings.max_job_bytes);
    let reply_to = envelope.reply_to.clone();
    let job = match (decoded, reply_to) {
        (Ok(job), Some(reply_to)) => Accepted {
            job,
            reply_to,
            admission,
        },
        (decoded, reply_to) => {
            let mut problems = decoded.err().map(|e| e.problems()).unwrap_or_default();
            if reply_to.is_none() {
                problems.push(
                    "reply_to: missing; set the message's reply_to to the caller's reply queue"
                        .into(),
                );
            }
            return Err(Refusal::Rejected(problems));
        }
    };
    check_repository(&job.job.image.repository, &settings.allowed_repositories)
        .map_err(|problem| Refusal::Rejected(vec![problem]))?;
    Ok(job)
}

/// Whether this worker builds `repository`: under one of `allowed`, a
/// prefix that ends at a path component unless it ends in `/` or `:`.
fn check_repository(repository: &str, allowed: &[String]) -> Result<(), String> {
    let under = |prefix: &String| match repository.strip_prefix(prefix.as_str()) {
        Some(rest) => rest.is_empty() || prefix.ends_with(['/', ':']) || rest.starts_with('/'),
        None => false,
    };
    if allowed.is_empty() || allowed.iter().any(under) {
        return Ok(());
    }
    Err(format!(
        "image.repository: {repository} is not allowed on this worker; it builds only under {}",
        allowed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::check_repository;

    #[test]
    fn repositories_must_be_under_an_allowed_prefix() {
        let allowed = [
            "r.example.com/team-a".to_owned(),
            "r.example.com/b-".to_owned(),
        ];
        assert!(check_repository("r.example.com/team-a", &allowed).is_ok());
        assert!(check_repository("r.example.com/team-a/app", &allowed).is_ok());
        assert!(check_repository("r.example.com/team-ab", &allowed).is_err());
        let plain = ["r.example.com/b/".to_owned()];
        assert!(check_repository("r.example.com/b/x", &plain).is_ok());
        assert!(check_repository("anything.example.com/x", &[]).is_ok());
        assert_eq!(
            check_repository("r.example.com/other", &allowed[..1]),
            Err("image.repository: r.example.com/other is not allowed on this worker; it builds only under r.example.com/team-a".to_owned())
        );
    }
}
