//! The artifact: `build.builder.artifacts` copied out of the builder
//! container as the archive the Docker Engine makes of it, kept in the
//! job's scratch directory, then unpacked into the runtime build context
//! at `build.builder.artifacts_dest` by [`unpack`], which treats it as the
//! untrusted input it is.

mod unpack;

pub(super) use unpack::{ArtifactError, Unpacked};

use super::{is_not_found, BuilderError, BuilderRun};
use crate::events::Reporter;
use bollard::query_parameters::DownloadFromContainerOptions;
use bollard::Docker;
use buildbot_protocol::grammar::path::CleanPath;
use buildbot_protocol::StepName;
use futures_util::StreamExt;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// The artifact's absolute path in the container, lexically clean:
/// `artifacts` when absolute, else under `workdir`.
fn path_in_container(workdir: &str, artifacts: &str) -> String {
    let joined = if artifacts.starts_with('/') {
        artifacts.to_owned()
    } else {
        format!("{workdir}/{artifacts}")
    };
    // Rooted, so `..` never climbs above `/`.
    CleanPath::new(&format!("/{joined}")).as_str().to_owned()
}

/// Copies the artifact out of `container` into the build context and
/// reports where it went.
pub(super) async fn copy_out(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let path = path_in_container(&spec.builder.workdir, &spec.builder.artifacts);
    let unpacked = download_and_unpack(docker, spec, container, &path).await?;
    report(spec, &path, &unpacked, reporter).await;
    Ok(unpacked)
}

/// Downloads the artifact's archive into the scratch dir, then unpacks it
/// into the context on a blocking thread.
async fn download_and_unpack(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    path: &str,
) -> Result<Unpacked, BuilderError> {
    let archive_path = spec.scratch.join("artifact.tar");
    download(docker, container, path, &archive_path).await?;
    let context_dir = spec.context_dir.to_owned();
    let dest = spec.builder.artifacts_dest.clone();
    let archive = archive_path.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&archive).map_err(ArtifactError::Archive)?;
        unpack::unpack(std::io::BufReader::new(file), &context_dir, &dest)
    })
    .await
    .map_err(|e| BuilderError::Api(format!("artifact task failed: {e}")))??;
    // The workspace goes too, soon; no need to keep a copy until then.
    let _ = tokio::fs::remove_file(&archive_path).await;
    Ok(unpacked)
}

/// Says where the artifact went, and what of the checkout it replaced.
async fn report(spec: &BuilderRun<'_>, path: &str, unpacked: &Unpacked, reporter: &Reporter) {
    let dest = &spec.builder.artifacts_dest;
    if unpacked.replaced {
        let line = format!("replaced {dest} of the checkout with the artifact");
        reporter.system(StepName::Builder, line).await;
    }
    let line = format!(
        "copied {path} to {dest} in the build context ({} files, {} bytes)",
        unpacked.files, unpacked.bytes
    );
    reporter.system(StepName::Builder, line).await;
}

/// Writes the daemon's archive of `path` in `container` to the file `to`.
async fn download(
    docker: &Docker,
    container: &str,
    path: &str,
    to: &Path,
) -> Result<(), BuilderError> {
    let download_error = |message: String| BuilderError::Download {
        path: path.to_owned(),
        message,
    };
    let options = DownloadFromContainerOptions {
        path: path.to_owned(),
    };
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| download_error(e.to_string()))?;
    let mut archive = docker.download_from_container(container, Some(options));
    while let Some(chunk) = archive.next().await {
        let chunk = chunk.map_err(|e| match e {
            e if is_not_found(&e) => BuilderError::ArtifactMissing {
                path: path.to_owned(),
            },
            e => download_error(e.to_string()),
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| download_error(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| download_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_path_is_absolute_and_clean() {
        assert_eq!(path_in_container("/src", "public"), "/src/public");
        assert_eq!(path_in_container("/src", "./out/../dist/"), "/src/dist");
        assert_eq!(path_in_container("/src", "/out"), "/out");
        assert_eq!(path_in_container("/src/", "."), "/src");
        assert_eq!(
            path_in_container("/work/../src", "/out/./site"),
            "/out/site"
        );
    }
}
