//! Credentials never leave the worker: canary secrets that a Dockerfile
//! prints in several encodings, and slowly enough that a line is split
//! across log events, are masked in every event, and the worker's own log
//! never holds them.

use base64::Engine as _;
use buildbot_protocol::{JobStatus, RegistryAuth, RepoAuth, Secret};
use buildbot_tests::e2e::Setup;
use buildbot_tests::SshKey;

/// The registry password of the job: the open registry never asks for it,
/// so the push succeeds while the value is a real credential of the job.
const CANARY: &str = "c4n4ry/p@ss+w0rd=&x";
/// Its URL-encoded form, as a tool printing a URL would show it.
const CANARY_URL_ENCODED: &str = "c4n4ry%2Fp%40ss%2Bw0rd%3D%26x";

fn base64(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_are_masked_in_every_event_and_in_the_worker_log() {
    let setup = Setup::start().await;
    let canary_b64 = base64(CANARY);
    let (_, tail) = CANARY.split_at(6);
    // The split print writes the first 6 bytes, waits past the batcher's
    // partial-line delay (so they are flushed as a partial line), then
    // prints the rest; the halves are cut at run time so that neither is
    // in the Dockerfile's text.
    let dockerfile = format!(
        "FROM {base}\n\
         RUN echo 'plain {CANARY}' \
         && echo \"b64 $(printf %s '{CANARY}' | base64)\" \
         && echo 'url {CANARY_URL_ENCODED}' \
         && printf 'split ' && printf %s '{CANARY}' | head -c 6 \
         && sleep 2 && printf %s '{CANARY}' | tail -c +7 && echo \
         && echo done-$((1+1))\n",
        base = setup.rig.base_image
    );
    let repo = setup
        .rig
        .create_repo("canary", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.no_cache = true;
    job.registry_auth = Some(RegistryAuth::Basic {
        server: Some(setup.rig.registry.clone()),
        username: "canary".into(),
        password: Secret::new(CANARY),
    });
    let attempt = setup.run(&job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    let log = attempt.log_text();
    assert!(log.contains("done-2"), "the build ran: {log}");

    let events = serde_json::to_string(&attempt.events).expect("events are JSON");
    let key = setup.rig.ssh_key_base64(SshKey::Authorized);
    let forms = [
        CANARY,
        CANARY_URL_ENCODED,
        canary_b64.as_str(),
        tail,
        key.as_str(),
    ];
    for form in forms {
        assert!(
            !events.contains(form),
            "{form:?} leaked into the events: {log}"
        );
        assert!(
            !setup.worker().log().contains(form),
            "{form:?} leaked into the worker's log"
        );
    }
    assert!(log.contains("plain ********"), "{log}");
    assert!(log.contains("b64 ********"), "{log}");
    assert!(log.contains("url ********"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_token_in_a_failing_clone_is_masked() {
    let setup = Setup::start().await;
    let repo = setup
        .rig
        .create_repo("token", &[("Dockerfile", b"FROM scratch\n")]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    // Nothing listens there: the clone fails, and its error must not
    // carry the token whatever the transport says.
    job.repo.url = "https://127.0.0.1:9/team/app.git".into();
    job.repo.auth = RepoAuth::Https {
        username: "ci".into(),
        token: Secret::new(CANARY),
    };
    job.repo.known_hosts = None;
    let attempt = setup.run(&job).await;
    assert_eq!(attempt.result().status, JobStatus::Failed);
    let events = serde_json::to_string(&attempt.events).expect("events are JSON");
    for form in [CANARY, CANARY_URL_ENCODED] {
        assert!(!events.contains(form), "{form:?} leaked: {events}");
        assert!(
            !setup.worker().log().contains(form),
            "{form:?} in the worker log"
        );
    }
}
