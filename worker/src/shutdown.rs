//! Shutdown signals: SIGTERM and SIGINT, listened for in one place.
//!
//! The worker turns a signal into a drain (stop consuming, finish or
//! requeue running jobs); `buildbot build` turns it into a cancelled job.
//! Both wait on [`signalled`].

use tokio_util::sync::CancellationToken;

/// Completes on SIGTERM or SIGINT (Ctrl-C). When SIGTERM cannot be
/// listened for, only SIGINT completes it; when neither can, it never
/// completes.
pub(crate) async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops this process");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub(crate) async fn cancel_on_signal(shutdown: CancellationToken) {
    signalled().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
