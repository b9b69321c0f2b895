//! Which builder a job runs: its `build.builder`, or the original
//! buildbot's convention detected in the checkout (a `build.sh` marked
//! `#build_inside_docker_image=`), or none.

use crate::pipeline::conventions::{self, BuildInside, ConventionError, PROJECT_DIR};
use buildbot_protocol::grammar::RelativePath;
use buildbot_protocol::{Builder, Job};
use std::collections::BTreeMap;
use std::path::Path;

/// Where, in the job's workspace, a builder's whole workdir is placed
/// when it becomes the checkout the runtime build reads.
pub(crate) const WHOLE_WORKDIR_DIR: &str = "project";

/// The builder a job runs.
#[derive(Debug)]
pub(crate) struct BuilderPlan {
    /// What runs.
    pub(crate) builder: Builder,
    /// The convention it was detected from, when the job set no builder.
    pub(crate) detected: Option<BuildInside>,
}

impl BuilderPlan {
    /// The job's `build.builder`; else, unless `build.conventions` is
    /// false, the convention of the checkout at `checkout`.
    pub(crate) fn choose(job: &Job, checkout: &Path) -> Result<Option<Self>, ConventionError> {
        if let Some(builder) = &job.build.builder {
            return Ok(Some(BuilderPlan {
                builder: builder.clone(),
                detected: None,
            }));
        }
        if !job.build.conventions {
            return Ok(None);
        }
        Ok(
            conventions::build_inside(checkout)?.map(|detected| BuilderPlan {
                builder: convention_builder(&detected),
                detected: Some(detected),
            }),
        )
    }

    /// Whether the artifact is the whole checkout the runtime build reads
    /// (`artifacts_dest` is `.`), rather than a path placed in its context.
    pub(crate) fn replaces_checkout(&self) -> bool {
        RelativePath::parse(&self.builder.artifacts_dest).is_ok_and(|path| path.is_base())
    }

    /// The builder as it runs: a whole-workdir artifact goes to
    /// [`WHOLE_WORKDIR_DIR`] beside the checkout.
    pub(crate) fn runnable(&self) -> Builder {
        let mut builder = self.builder.clone();
        if self.replaces_checkout() {
            WHOLE_WORKDIR_DIR.clone_into(&mut builder.artifacts_dest);
        }
        builder
    }
}

/// What the original ran: `./build.sh` in `/project` of the marked image,
/// the whole directory coming back as the build's checkout.
fn convention_builder(detected: &BuildInside) -> Builder {
    Builder {
        image: Some(detected.image.clone()),
        dockerfile: None,
        command: vec![format!("./{}", conventions::BUILD_SCRIPT)],
        workdir: PROJECT_DIR.to_owned(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        artifacts: PROJECT_DIR.to_owned(),
        artifacts_dest: ".".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new(
            "app",
            "https://git.example.com/app.git",
            "main",
            "r.example.com/app",
            ["1"],
        )
    }

    #[test]
    fn the_marker_makes_a_whole_workdir_builder_unless_switched_off() {
        let checkout = tempfile::tempdir().unwrap();
        let script = "#!/bin/sh\n#build_inside_docker_image=node:20\nnpm run build\n";
        std::fs::write(checkout.path().join("build.sh"), script).unwrap();
        let plan = BuilderPlan::choose(&job(), checkout.path())
            .unwrap()
            .unwrap();
        assert_eq!(plan.builder.image.as_deref(), Some("node:20"));
        assert_eq!(plan.builder.command, ["./build.sh"]);
        assert_eq!(plan.builder.workdir, "/project");
        assert!(plan.replaces_checkout());
        assert_eq!(plan.runnable().artifacts_dest, WHOLE_WORKDIR_DIR);

        let mut off = job();
        off.build.conventions = false;
        assert!(BuilderPlan::choose(&off, checkout.path())
            .unwrap()
            .is_none());
    }

    #[test]
    fn no_marker_no_builder() {
        let checkout = tempfile::tempdir().unwrap();
        std::fs::write(checkout.path().join("build.sh"), "#!/bin/sh\nmake\n").unwrap();
        assert!(BuilderPlan::choose(&job(), checkout.path())
            .unwrap()
            .is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(BuilderPlan::choose(&job(), empty.path()).unwrap().is_none());
    }
}
