//! What a caller and an operator see when things go wrong around a job:
//! a cancel sent while no worker runs, a rejected job without a reply
//! queue, a wrapped base64 print of a credential, and a worker logging at
//! `trace`.

use base64::Engine as _;
use buildbot_protocol::{EventBody, JobStatus, RegistryAuth, Secret, StepName, StepState};
use buildbot_tests::e2e::{steps, Fleet, RESULT_WITHIN};
use buildbot_tests::orchestrator::Attempt;
use std::time::Duration;
use uuid::Uuid;

/// Submits `job` and reads its events up to a `succeeded` result.
async fn run_to_success(fleet: &Fleet, job: &buildbot_protocol::Job) -> Attempt {
    let attempt = fleet
        .submit(job)
        .await
        .until_result(RESULT_WITHIN)
        .await
        .expect("a result");
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    attempt
}

/// A registry password long enough that its base64 wraps over several
/// 76-column lines; the open registry never asks for it.
fn long_canary() -> String {
    format!("canary-{}-{}", Uuid::new_v4().simple(), "Zq9/+".repeat(24))
}

fn base64(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_while_no_worker_runs_is_honoured_by_a_worker_started_later() {
    let fleet = Fleet::new().await;
    // A first worker declares the queue, then goes away.
    let mut first = fleet.worker(&[]).await;
    first
        .terminate(Duration::from_secs(10))
        .await
        .expect("the worker stops");
    let repo = fleet.rig.create_repo(
        "cancelled-early",
        &[("Dockerfile", b"FROM buildbot-base:busybox\n")],
    );
    let job = fleet.rig.job(&repo, &fleet.rig.registry);
    let mut replies = fleet.submit(&job).await;
    fleet
        .orchestrator
        .cancel(job.job_id)
        .await
        .expect("publish the cancel");

    let _late = fleet.worker(&[]).await;
    let attempt = replies.until_result(RESULT_WITHIN).await.expect("a result");
    assert_eq!(
        attempt.result().status,
        JobStatus::Cancelled,
        "{:#?}",
        attempt.result()
    );
    assert!(
        !steps(&attempt).contains(&(StepName::Clone, StepState::Started)),
        "a cancelled job is not cloned: {:#?}",
        attempt.events
    );
    let error = attempt.result().error.as_ref().expect("why");
    assert_eq!(error.step, StepName::Queue, "{error:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_reply_to_is_rejected_on_the_events_exchange() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&[]).await;
    let job_id = Uuid::new_v4().to_string();
    let mut watched = fleet
        .orchestrator
        .watch_events(&format!("*.{job_id}.result"))
        .await
        .expect("watch the events exchange");
    let repo = fleet.rig.create_repo(
        "no-reply",
        &[("Dockerfile", b"FROM buildbot-base:busybox\n")],
    );
    let job = fleet.rig.job(&repo, &fleet.rig.registry);
    let body = serde_json::to_vec(&job).expect("JSON");
    fleet
        .orchestrator
        .publish_job(&fleet.queue, &body, &job_id, None)
        .await
        .expect("publish");
    let attempt = watched
        .until_result(RESULT_WITHIN)
        .await
        .expect("the rejection on the events exchange");
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Rejected, "{result:#?}");
    let error = result.error.as_ref().expect("the reason");
    assert!(
        error.problems.iter().any(|p| p.contains("reply_to")),
        "{error:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_lists_every_problem_and_is_routed_by_the_body_s_ids() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&[]).await;
    let job_id = Uuid::new_v4();
    let mut watched = fleet
        .orchestrator
        .watch_events(&format!("svc-x.{job_id}.result"))
        .await
        .expect("watch the events exchange");
    // No correlation_id, no reply_to: only the body names the job.
    let body = format!(r#"{{"version":1,"job_id":"{job_id}","service_id":"svc-x"}}"#);
    fleet
        .orchestrator
        .publish_job(&fleet.queue, body.as_bytes(), "", None)
        .await
        .expect("publish");
    let attempt = watched
        .until_result(RESULT_WITHIN)
        .await
        .expect("the rejection, routed svc-x.<job_id>.result");
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Rejected, "{result:#?}");
    assert_eq!(result.service_id.as_deref(), Some("svc-x"));
    assert_eq!(attempt.events[0].job_id, job_id.to_string());
    let problems = &result.error.as_ref().expect("problems").problems;
    for field in ["repo", "image", "reply_to"] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} missing in {problems:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_printing_without_end_is_capped_and_still_succeeds() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&["--max-log-bytes", "65536"]).await;
    // About 2 MB of output, generated at run time.
    let dockerfile = "FROM buildbot-base:busybox\n\
         RUN i=0; while [ $i -lt 20000 ]; do \
         echo \"flood line $i ..........................................................................\"; \
         i=$((i+1)); done\n";
    let repo = fleet
        .rig
        .create_repo("flood", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    job.build.no_cache = true;
    let attempt = run_to_success(&fleet, &job).await;
    let logged: usize = attempt
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Log(l) if !l.text.contains("log truncated") => Some(l.text.len()),
            _ => None,
        })
        .sum();
    assert!(logged <= 65536, "{logged} bytes of log published");
    let notices = attempt
        .events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Log(l) if l.text.contains("log truncated")))
        .count();
    assert_eq!(notices, 1, "one truncation notice");
    let log = attempt.log_text();
    assert!(!log.contains("flood line 19999"), "the tail was dropped");
}

/// Runs a job whose build prints the long canary as wrapped base64 (76
/// columns, busybox's default) on a worker started with `log_filter`, and
/// checks that no form of it is in the events or the worker's log.
async fn canary_build(log_filter: &str) {
    let fleet = Fleet::new().await;
    let worker = fleet
        .worker_with_env(&[], &[("BUILDBOT_LOG", log_filter)])
        .await;
    let canary = long_canary();
    let dockerfile = format!(
        "FROM buildbot-base:busybox\n\
         RUN printf %s '{canary}' | base64 && printf %s 'xy{canary}' | base64 \
         && echo done-$((1+1))\n"
    );
    let repo = fleet
        .rig
        .create_repo("wrapped", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    job.build.no_cache = true;
    job.registry_auth = Some(RegistryAuth::Basic {
        server: Some(fleet.rig.registry.clone()),
        username: "canary".into(),
        password: Secret::new(canary.clone()),
    });
    let attempt = run_to_success(&fleet, &job).await;
    let log = attempt.log_text();
    assert!(log.contains("done-2"), "the build ran: {log}");

    let events = serde_json::to_string(&attempt.events).expect("JSON");
    let worker_log = worker.log();
    let decimal_bytes = canary.as_bytes()[..12]
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Every 8-character piece of the base64 forms, wherever it was cut.
    let url_encoded: String = canary
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut forms = vec![canary.clone(), decimal_bytes, url_encoded];
    for encoded in [base64(&canary), base64(&format!("xy{canary}"))] {
        let inner = &encoded[4..encoded.len() - 4];
        forms.extend(
            inner
                .as_bytes()
                .chunks(8)
                .filter(|c| c.len() == 8)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
    }
    for form in &forms {
        assert!(
            !events.contains(form.as_str()),
            "{form:?} leaked into the events: {log}"
        );
        assert!(
            !worker_log.contains(form.as_str()),
            "{form:?} leaked into the worker's {log_filter} log"
        );
    }
    assert!(
        attempt
            .events
            .iter()
            .any(|e| matches!(&e.body, EventBody::Log(l) if l.text.contains("********"))),
        "the wrapped lines are masked: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_printed_as_wrapped_base64_is_masked() {
    canary_build("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_logging_at_trace_prints_no_credential() {
    canary_build("trace").await;
}
