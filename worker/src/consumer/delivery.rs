//! A delivery decoded: whom its events go to ([`Envelope`], read from the
//! message properties whatever the body says) and either an [`Accepted`]
//! job, ready to run, or every problem that makes it unacceptable.

use super::JobContext;
use buildbot_protocol::amqp::HEADER_DELIVERY_COUNT;
use buildbot_protocol::signature::verify_job;
use buildbot_protocol::{decode_job_with_limit, Job};
use lapin::types::AMQPValue;
use lapin::BasicProperties;

/// Where a delivery's events go and whom they name.
pub(super) struct Envelope {
    pub(super) job_id: String,
    pub(super) attempt: u32,
    pub(super) reply_to: Option<String>,
}

impl Envelope {
    pub(super) fn of(properties: &BasicProperties) -> Self {
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
}

/// The accepted job, or every problem that makes it unacceptable: the
/// body's and the message's (a missing `reply_to`) in one list.
pub(super) fn decode(
    data: &[u8],
    envelope: &Envelope,
    context: &JobContext,
) -> Result<Accepted, Vec<String>> {
    let decoded = decode_job_with_limit(data, context.settings.max_job_bytes);
    let reply_to = envelope.reply_to.clone();
    let job = match (decoded, reply_to) {
        (Ok(job), Some(reply_to)) => Accepted { job, reply_to },
        (decoded, reply_to) => {
            let mut problems = decoded.err().map(|e| e.problems()).unwrap_or_default();
            if reply_to.is_none() {
                problems.push(
                    "reply_to: missing; set the message's reply_to to the caller's reply queue"
                        .into(),
                );
            }
            return Err(problems);
        }
    };
    if !context.settings.trusted_keys.is_empty() {
        // decode_job_with_limit accepted it: it is a JSON object.
        let message: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| vec![format!("job: {e}")])?;
        verify_job(&message, &context.settings.trusted_keys).map_err(|e| vec![e.to_string()])?;
    }
    check_repository(
        &job.job.image.repository,
        &context.settings.allowed_repositories,
    )
    .map_err(|problem| vec![problem])?;
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
