//! `buildbot dashboard` against the real rig: a job followed live from the
//! events exchange (its lines arrive while it runs, in order), in a real
//! browser (Debian's headless Chromium) with a build printing HTML that
//! must stay text, the service filter, the bounds, basic auth and the
//! refusal to serve beyond loopback without credentials. The test of the
//! job page also writes the README's screenshot, docs/dashboard.png.

use buildbot_tests::e2e::Setup;
use buildbot_tests::worker::worker_binary;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `buildbot dashboard`, killed when dropped.
struct Dashboard {
    _child: Child,
    addr: String,
    /// Basic credentials (base64 of `user:password`) its API asks for.
    basic: Option<String>,
}

impl Dashboard {
    async fn start(amqp_url: &str, args: &[&str]) -> Self {
        Self::start_with(amqp_url, args, &[], None).await
    }

    async fn start_with(
        amqp_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
        basic: Option<String>,
    ) -> Self {
        let mut child = Command::new(worker_binary())
            .args([
                "dashboard",
                "--amqp-url",
                amqp_url,
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(args)
            .envs(env.iter().copied())
            .env("BUILDBOT_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the dashboard");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("dashboard serving http://") {
                    let rest = &line[at + "dashboard serving http://".len()..];
                    return rest
                        .trim_end_matches('/')
                        .split('/')
                        .next()
                        .map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("the dashboard says where it serves");
        // Keep draining its log, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let dashboard = Self {
            _child: child,
            addr,
            basic,
        };
        dashboard.wait_connected().await;
        dashboard
    }

    async fn get(&self, path: &str) -> (u16, String) {
        get(
            &format!("http://{}{path}", self.addr),
            self.basic.as_deref(),
        )
        .await
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    async fn wait_connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.json("/api/jobs").await["connected"] == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the dashboard did not connect to RabbitMQ");
    }

    /// Polls the job's view until `done` says so; returns it.
    async fn job_until(&self, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get(&format!("/api/jobs/{job_id}")).await;
            if status == 200 {
                let view: Value = serde_json::from_str(&body).expect("JSON");
                if done(&view) {
                    return view;
                }
            }
            assert!(Instant::now() < deadline, "job {job_id} never got there");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A plain HTTP/1.0 GET over TCP (loopback): status and body.
async fn get(url: &str, basic: Option<&str>) -> (u16, String) {
    let (status, _headers, body) = get_with_headers(url, basic).await;
    (status, body)
}

async fn get_with_headers(url: &str, basic: Option<&str>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let auth = basic.map_or(String::new(), |b| format!("Authorization: Basic {b}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Headless Chromium driven by ChromeDriver (Debian's chromium and
/// chromium-driver) over the W3C WebDriver HTTP API. Hand-written: five
/// JSON calls over the blocking HTTP client the tests already use, where a
/// WebDriver crate would bring a second async HTTP stack.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/test installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,860",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            match webdriver(&format!("{base}/session"), Some(&capabilities)) {
                Ok(value) => {
                    let id = value["value"]["sessionId"].as_str().expect("a session id");
                    break id.to_owned();
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Self {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn call(&self, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        webdriver(&url, body).unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    fn open(&self, url: &str) {
        self.call("/url", Some(&serde_json::json!({ "url": url })));
    }

    /// The text the page shows (`innerText` of its body).
    fn text(&self) -> String {
        let script = serde_json::json!({"script": "return document.body.innerText", "args": []});
        self.call("/execute/sync", Some(&script))["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser has it now.
    fn html(&self) -> String {
        let script =
            serde_json::json!({"script": "return document.documentElement.outerHTML", "args": []});
        self.call("/execute/sync", Some(&script))["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page's text satisfies `done`; returns it.
    fn text_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("/screenshot", None)["value"]
            .as_str()
            .map(|b64| base64::engine::general_purpose::STANDARD.decode(b64))
            .expect("a screenshot")
            .expect("base64");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let _ = agent.delete(&url).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver command: POST with `body`, or GET without.
fn webdriver(url: &str, body: Option<&Value>) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = match body {
        Some(body) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes()),
        None => agent.get(url).call(),
    };
    let mut response = response.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!("HTTP {status}: {value}"))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_seen_live_in_the_browser_with_its_html_shown_as_text() {
    let setup = Setup::start().await;
    // Its own service, and a dashboard that follows only it: other tests'
    // jobs go through the same exchange.
    let service = format!("dash-{}", uuid::Uuid::new_v4().simple());
    let binding = format!("{service}.#");
    let dashboard = Dashboard::start(&setup.rig.amqp_url, &["--binding-key", &binding]).await;
    let (_, headers, index) = get_with_headers(&format!("http://{}/", dashboard.addr), None).await;
    assert!(index.contains("<script src=\"/app.js\""), "{index}");
    for header in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
    ] {
        assert!(
            headers.to_lowercase().contains(header),
            "{header}: {headers}"
        );
    }

    let dockerfile = format!(
        "FROM {}\n\
         RUN echo '<script>window.injected=1</script><img src=x onerror=\"window.injected=2\">' \
         && for i in $(seq 1 12); do echo \"numbered line $i\"; sleep 0.5; done\n",
        setup.rig.base_image
    );
    let repo = setup
        .rig
        .create_repo("dashboard", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.no_cache = true;
    job.service_id.clone_from(&service);
    let job_id = job.job_id.to_string();
    // The browser first: it takes seconds to start on a loaded machine,
    // longer than the build's lines would wait for it.
    let browser = tokio::task::block_in_place(Browser::start);
    let replies = setup.submit(&job).await;

    // Lines arrive on the open page while the job runs, in order: the
    // page is open once the dashboard knows the job, and the build prints
    // its last line 6 s after its first.
    dashboard.job_until(&job_id, |_| true).await;
    let page = format!("http://{}/#/jobs/{job_id}", dashboard.addr);
    let live = tokio::task::block_in_place(|| {
        browser.open(&page);
        browser.text_until("line 2", |t| t.contains("numbered line 2"))
    });
    assert!(
        !live.contains("numbered line 12"),
        "seen before the job ended: {live}"
    );
    let done = dashboard
        .job_until(&job_id, |v| v["status"] != "running")
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let digest = done["result"]["image"]["digest"].as_str().expect("digest");
    drop(replies);
    let shown =
        tokio::task::block_in_place(|| browser.text_until("the digest", |t| t.contains(digest)));
    let positions: Vec<usize> = (1..=12)
        .map(|i| {
            shown
                .find(&format!("numbered line {i}"))
                .expect("every line")
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order: {shown}"
    );
    assert!(shown.contains("succeeded"), "{shown}");

    // The build's HTML is text on the page, not elements.
    let html = tokio::task::block_in_place(|| browser.html());
    assert!(
        shown.contains("<script>window.injected=1</script>"),
        "shown as text: {shown}"
    );
    assert!(
        html.contains("&lt;script&gt;window.injected=1&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        !html.contains("<script>window.injected"),
        "no script element: {html}"
    );
    assert!(!html.contains("<img src=\"x\""), "no img element: {html}");

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
    tokio::task::block_in_place(|| browser.screenshot(&screenshot));

    // The list, filtered by service in the page's address.
    tokio::task::block_in_place(|| {
        browser.open(&format!("http://{}/#/?service={service}", dashboard.addr));
        browser.text_until("the job in the list", |t| t.contains(&job_id));
        browser.open("about:blank");
        browser.open(&format!(
            "http://{}/#/?service=no-such-service",
            dashboard.addr
        ));
        // The list renders after its data arrives: wait for the header
        // pill, then check the job is not listed.
        let text = browser.text_until("the list loaded", |t| t.contains("live"));
        assert!(!text.contains(&job_id), "filtered out: {text}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_jobs_than_the_bound_evict_the_oldest() {
    let setup = Setup::start().await;
    let service = format!("bounded-{}", uuid::Uuid::new_v4().simple());
    let binding = format!("{service}.#");
    let args = ["--max-jobs", "2", "--binding-key", binding.as_str()];
    let dashboard = Dashboard::start(&setup.rig.amqp_url, &args).await;
    let dockerfile = format!("FROM {}\n", setup.rig.base_image);
    let repo = setup
        .rig
        .create_repo("bounded", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut job = setup.rig.job(&repo, &setup.rig.registry);
        job.image.push = false;
        job.service_id.clone_from(&service);
        ids.push(job.job_id.to_string());
        setup.run(&job).await;
    }
    dashboard
        .job_until(&ids[2], |v| v["status"] != "running")
        .await;
    let list = dashboard.json("/api/jobs").await;
    let kept: Vec<&str> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert_eq!(kept, [ids[2].as_str(), ids[1].as_str()], "{list:#}");
    assert_eq!(list["evicted"], 1);
    assert_eq!(dashboard.get(&format!("/api/jobs/{}", ids[0])).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_it_needs_credentials_and_then_asks_for_them() {
    let rig = buildbot_tests::Rig::load();
    let refused = Command::new(worker_binary())
        .args([
            "dashboard",
            "--amqp-url",
            &rig.amqp_url,
            "--http-addr",
            "0.0.0.0:0",
        ])
        .output()
        .await
        .expect("run the dashboard");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without credentials"),
        "{stderr}"
    );

    use base64::Engine as _;
    let right = base64::engine::general_purpose::STANDARD.encode("ops:s3cret-pw");
    let dashboard = Dashboard::start_with(
        &rig.amqp_url,
        &["--user", "ops"],
        &[("BUILDBOT_DASHBOARD_PASSWORD", "s3cret-pw")],
        Some(right.clone()),
    )
    .await;
    let url = format!("http://{}/api/jobs", dashboard.addr);
    assert_eq!(get(&url, None).await.0, 401);
    let wrong = base64::engine::general_purpose::STANDARD.encode("ops:nope");
    assert_eq!(get(&url, Some(&wrong)).await.0, 401);
    assert_eq!(get(&url, Some(&right)).await.0, 200);
    // The health check stays open, for load balancers.
    assert_eq!(
        get(&format!("http://{}/healthz", dashboard.addr), None)
            .await
            .0,
        200
    );
}
