//! The repositories the benchmark builds, on the rig's SSH remote: a small
//! app, one with a large history (generated once with `git fast-import` and
//! kept between runs), one whose build prints many lines, and one whose
//! build prints timestamped probe lines.

use anyhow::{bail, Context};
use buildbot_tests::{Rig, TestRepo};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Keeps `.git` out of the build context: what any real repository does,
/// and without it `docker build` would upload the whole history while the
/// worker's shallow checkout would send almost nothing.
const DOCKERIGNORE: &str = ".git\n";

/// The build of the small and the large-history app: a cached `RUN` and a
/// `COPY` of the checkout, like a typical app image.
fn app_dockerfile(base: &str) -> String {
    format!("FROM {base}\nRUN echo preparing the runtime\nCOPY . /app\nCMD [\"ls\", \"/app\"]\n")
}

/// The shape of the large-history repository. Every commit rewrites one
/// file with fresh content that does not delta against earlier versions
/// (like generated files or assets), so the history weighs what it says.
struct HistoryShape {
    commits: usize,
    files: usize,
    file_bytes: usize,
}

const HISTORY: HistoryShape = HistoryShape {
    commits: 3000,
    files: 20,
    file_bytes: 48 * 1024,
};

/// Marker written once the history repository is complete, so a run that
/// was interrupted while generating it starts over.
const COMPLETE_MARKER: &str = "bench-history-complete";

/// The small app: a page and a few files.
pub fn small_app(rig: &Rig) -> anyhow::Result<TestRepo> {
    let dockerfile = app_dockerfile(&rig.base_image);
    let page = "<html><body>benchmark app</body></html>\n".repeat(20);
    let source = "fn main() { println!(\"hello\"); }\n".repeat(100);
    rig.try_create_repo(
        "bench-small",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            (".dockerignore", DOCKERIGNORE.as_bytes()),
            ("site/index.html", page.as_bytes()),
            ("src/main.rs", source.as_bytes()),
            ("README.md", b"The benchmark's small app.\n"),
        ],
    )
}

/// The builder app's Dockerfile for its builder image: what a real
/// toolchain image does, work a cached builder image saves. `marker` comes
/// first so that every layer after it is new to the daemon's layer cache
/// too: a fresh marker means a really cold builder. The `RUN` writes a
/// 20 MiB toolchain file and its checksum and computes a table (about half
/// a second of awk, no sleep); the `COPY` takes one small tool script from
/// the checkout, so the cache key covers a file of the repository.
pub fn builder_dockerfile(base: &str, marker: &str) -> String {
    let toolchain = [
        "mkdir -p /opt/toolchain",
        "head -c 20971520 /dev/urandom > /opt/toolchain/lib.bin",
        "sha256sum /opt/toolchain/lib.bin > /opt/toolchain/lib.sha256",
        "awk 'BEGIN { for (i = 0; i < 1000000; i++) s = (s * 31 + i) % 1000003; print s }' \
         > /opt/toolchain/table",
    ]
    .join(" && ");
    format!(
        "FROM {base}\nRUN echo 'bench builder {marker}' > /etc/bench-builder\n\
         RUN {toolchain}\nCOPY tools/render.sh /opt/render.sh\n"
    )
}

/// The builder's command: checks that the toolchain is there, then makes
/// the artifact from the app's files. The artifact is exactly `app/`, so
/// the runtime image with a builder and the one of the plain Dockerfile
/// hold the same files.
const RENDER_SCRIPT: &str =
    "#!/bin/sh\nset -e\ntest -s /opt/toolchain/lib.bin\nmkdir -p /out\ncp -R app/. /out/\n";

/// The builder app: `Dockerfile.build` (the builder image, see
/// [`builder_dockerfile`]), `Dockerfile` (the runtime image, from the
/// builder's artifact) and `Dockerfile.plain` (the same runtime image
/// straight from the checkout, for the job without a builder).
pub fn builder_app(rig: &Rig, marker: &str) -> anyhow::Result<TestRepo> {
    let base = &rig.base_image;
    let builder = builder_dockerfile(base, marker);
    let runtime = format!("FROM {base}\nCOPY artifact/ /app/\nCMD [\"ls\", \"/app\"]\n");
    let plain = format!("FROM {base}\nCOPY app/ /app/\nCMD [\"ls\", \"/app\"]\n");
    let page = "<html><body>benchmark builder app</body></html>\n".repeat(20);
    let source = "fn main() { println!(\"hello\"); }\n".repeat(100);
    rig.try_create_repo(
        "bench-builder",
        &[
            ("Dockerfile.build", builder.as_bytes()),
            ("Dockerfile", runtime.as_bytes()),
            ("Dockerfile.plain", plain.as_bytes()),
            (".dockerignore", DOCKERIGNORE.as_bytes()),
            ("tools/render.sh", RENDER_SCRIPT.as_bytes()),
            ("app/index.html", page.as_bytes()),
            ("app/main.rs", source.as_bytes()),
        ],
    )
}

/// A repository whose build prints `bench line 1` .. `bench line N`, N from
/// the build argument `LINES`, all at once (awk writes as fast as the
/// daemon reads).
pub fn log_app(rig: &Rig) -> anyhow::Result<TestRepo> {
    let dockerfile = format!(
        "FROM {}\nARG LINES=1000\n\
         RUN awk -v n=\"$LINES\" 'BEGIN {{ for (i = 1; i <= n; i++) printf \"bench line %d\\n\", i }}'\n",
        rig.base_image
    );
    rig.try_create_repo(
        "bench-logs",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            (".dockerignore", DOCKERIGNORE.as_bytes()),
        ],
    )
}

/// A repository whose build prints `PROBES` lines `<epoch>.<micros>
/// latency-probe <i>` about 20 ms apart. busybox `date` has no `%N`, but its
/// `ts "%.s"` stamps a line with microseconds; one `ts` per line because
/// `ts` holds its output until it exits when writing to a pipe.
pub fn latency_app(rig: &Rig) -> anyhow::Result<TestRepo> {
    let dockerfile = format!(
        "FROM {}\nARG PROBES=100\n\
         RUN for i in $(seq \"$PROBES\"); do echo \"latency-probe $i\" | ts %.s; usleep 20000; done\n",
        rig.base_image
    );
    rig.try_create_repo(
        "bench-latency",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            (".dockerignore", DOCKERIGNORE.as_bytes()),
        ],
    )
}

/// The large-history app, generated on first use and reused afterwards
/// (each benchmark run only adds a few commits on top).
pub fn history_app(rig: &Rig) -> anyhow::Result<TestRepo> {
    let name = format!(
        "bench-history-{}x{}x{}k.git",
        HISTORY.commits,
        HISTORY.files,
        HISTORY.file_bytes / 1024
    );
    let path = rig.git_repos.join(&name);
    if !path.join(COMPLETE_MARKER).exists() {
        eprintln!(
            "==> generating {name}: {} commits of {} KiB each (kept for later runs)",
            HISTORY.commits,
            HISTORY.file_bytes / 1024
        );
        generate_history(rig, &path)?;
    }
    let mut repo = TestRepo {
        ssh_url: rig.ssh_url(&name),
        commit: String::new(),
        path,
    };
    repo.commit = tip(&repo)?;
    Ok(repo)
}

/// What the large-history repository holds, for the report.
pub fn describe_history(repo: &TestRepo) -> String {
    format!(
        "{} commits, each rewriting one of {} files of {} KiB; {} on the remote",
        HISTORY.commits,
        HISTORY.files,
        HISTORY.file_bytes / 1024,
        crate::report::mib(dir_size(&repo.path))
    )
}

/// Bytes of the files under `path` (0 for what cannot be read: the figure
/// only describes the repository).
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The commit `main` points at now.
pub fn tip(repo: &TestRepo) -> anyhow::Result<String> {
    let bare = git2::Repository::open_bare(&repo.path)
        .with_context(|| format!("opening {}", repo.path.display()))?;
    Ok(bare.refname_to_id("refs/heads/main")?.to_string())
}

fn generate_history(rig: &Rig, path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    git(
        path,
        &["init", "--quiet", "--bare", "--initial-branch=main", "."],
    )?;
    fast_import(path, &app_dockerfile(&rig.base_image))?;
    // Servers keep their repositories packed; one pack (and its bitmap)
    // is what a hosted repository of this size would serve from.
    git(path, &["repack", "-a", "-d", "-b", "-q", "--window=0"])?;
    // The remote's `git` user reads the repository the benchmark (root)
    // wrote.
    let status = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("chmod -R a+rX {} failed: {status}", path.display());
    }
    std::fs::write(path.join(COMPLETE_MARKER), b"complete\n")?;
    Ok(())
}

/// Runs `git` in the bare repository at `path`.
fn git(path: &Path, args: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    let status = Command::new("git").current_dir(path).args(args).status()?;
    if !status.success() {
        bail!(
            "git {} failed in {}: {status}",
            args.join(" "),
            path.display()
        );
    }
    Ok(())
}

/// Streams the whole history into `git fast-import`: a first commit with
/// the app and every file, then one commit per rewritten file.
fn fast_import(path: &Path, dockerfile: &str) -> anyhow::Result<()> {
    let mut child = Command::new("git")
        .current_dir(path)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    let stdin = child.stdin.take().context("git fast-import has no stdin")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for n in 0..HISTORY.commits {
        let mut files = Vec::new();
        if n == 0 {
            files.push(("Dockerfile".to_owned(), dockerfile.as_bytes().to_vec()));
            files.push((".dockerignore".to_owned(), DOCKERIGNORE.as_bytes().to_vec()));
            for f in 0..HISTORY.files {
                files.push((data_file(f), random.hex_text(HISTORY.file_bytes)));
            }
        } else {
            let f = n % HISTORY.files;
            files.push((data_file(f), random.hex_text(HISTORY.file_bytes)));
        }
        write_commit(&mut out, n, &files)?;
    }
    out.flush()?;
    drop(out);
    let status = child.wait()?;
    if !status.success() {
        bail!("git fast-import failed: {status}");
    }
    Ok(())
}

fn data_file(index: usize) -> String {
    format!("data/generated-{index:02}.txt")
}

fn write_commit(
    out: &mut impl std::io::Write,
    n: usize,
    files: &[(String, Vec<u8>)],
) -> std::io::Result<()> {
    // A fixed, increasing date keeps the generated history reproducible.
    let when = 1_600_000_000 + n * 60;
    let message = format!("generated commit {n}\n");
    writeln!(out, "commit refs/heads/main")?;
    writeln!(out, "committer bench <bench@buildbot.invalid> {when} +0000")?;
    writeln!(out, "data {}\n{message}", message.len())?;
    for (path, content) in files {
        writeln!(out, "M 100644 inline {path}\ndata {}", content.len())?;
        out.write_all(content)?;
        writeln!(out)?;
    }
    writeln!(out)
}

/// A tiny deterministic generator (xorshift64): the content only has to be
/// fresh per commit, not cryptographically random.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes of lines of 63 hex digits: text like a generated file,
    /// compressing about 2:1 as such files do.
    fn hex_text(&mut self, len: usize) -> Vec<u8> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = Vec::with_capacity(len);
        while text.len() < len {
            let mut bits = self.next();
            for _ in 0..16 {
                let column = text.len() % 64;
                if column == 63 {
                    text.push(b'\n');
                } else {
                    text.push(HEX[(bits & 0xf) as usize]);
                    bits >>= 4;
                }
            }
        }
        text.truncate(len);
        text
    }
}
