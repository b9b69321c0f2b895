//! A worker with trusted keys runs only jobs signed by one of them, and
//! rejects the rest before touching git or Docker.

use buildbot_protocol::signature::{public_key_base64, sign_job, SigningKey};
use buildbot_protocol::JobStatus;
use buildbot_tests::e2e::{assert_rejected, Setup};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_jobs_signed_by_a_trusted_key_run() {
    let trusted = public_key_base64(&key(1).verifying_key());
    let setup = Setup::start_with(&["--trusted-key", &trusted]).await;
    let repo = setup
        .rig
        .create_repo("signed", &[("Dockerfile", b"FROM buildbot-base:busybox\n")]);
    let sign = |job: &buildbot_protocol::Job, with: &SigningKey| {
        let value = serde_json::to_value(job).expect("a job is JSON");
        sign_job(&value, with).expect("sign")
    };

    let job = setup.rig.job(&repo, &setup.rig.registry);
    let body = serde_json::to_vec(&sign(&job, &key(1))).expect("JSON");
    let attempt = setup.run_message(&job.job_id.to_string(), &body).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);

    let unsigned = setup.rig.job(&repo, &setup.rig.registry);
    assert_rejected(&setup.run(&unsigned).await, "signature: missing");

    let other = setup.rig.job(&repo, &setup.rig.registry);
    let body = serde_json::to_vec(&sign(&other, &key(2))).expect("JSON");
    let attempt = setup.run_message(&other.job_id.to_string(), &body).await;
    assert_rejected(&attempt, "does not verify");

    let tampered = setup.rig.job(&repo, &setup.rig.registry);
    let mut value = sign(&tampered, &key(1));
    value["image"]["tags"][0] = "evil".into();
    let body = serde_json::to_vec(&value).expect("JSON");
    let attempt = setup.run_message(&tampered.job_id.to_string(), &body).await;
    assert_rejected(&attempt, "does not verify");
}
