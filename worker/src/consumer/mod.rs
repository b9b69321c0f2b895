//! The AMQP consumer: declares the job queue, takes deliveries, hands valid
//! jobs to the pipeline, and acks each delivery only after the job's result
//! is confirmed by the broker. Invalid jobs are answered with a `rejected`
//! result and dead-lettered. It never talks to Docker.
//!
//! - [`connection`]: the broker connection pool and how broker errors read.
//! - [`failover`]: which broker node is used next, and the backoff.
//! - [`topology`]: the queues and exchanges it declares.
//! - [`control`]: cancel messages, read from the cancel stream.
//! - [`dead_letters`]: each dead-lettered job's final result and parked copy.
//! - [`delivery`]: a delivery decoded into an accepted job or its problems.
//! - [`job`]: one delivery run, answered and acked (or requeued).
//! - [`outbox`]: what a lost connection kept back, sent on the next one.
//! - [`running`]: the jobs running here and how each is stopped early.
//! - [`settle`]: acks, nacks and rejects, bounded in time.

mod admission;
mod connection;
mod control;
mod dead_letters;
mod delivery;
mod failover;
mod intake;
mod job;
mod outbox;
mod running;
mod settle;
mod topology;

use crate::events::reply::EventsExchange;
use crate::events::LogBatching;
use crate::observe::disk::DiskWatch;
use crate::observe::metrics::Metrics;
use crate::observe::readiness::Readiness;
use crate::pipeline::Pipeline;
use admission::AdmittedNonces;
use buildbot_protocol::amqp::brokers::{BrokerUrl, Brokers};
use buildbot_protocol::amqp::topology as amqp_topology;
use buildbot_protocol::signature::VerifyingKey;
use connection::{broker, connection_pool};
use deadpool_lapin::Pool;
use failover::Failover;
use futures_util::StreamExt;
use intake::JobIntake;
use lapin::options::{BasicCancelOptions, BasicQosOptions};
use lapin::types::ShortString;
use outbox::Outbox;
use running::{RunningJobs, Stop};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the consumer needs to know, made from the worker's flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The broker's nodes, in the order they are tried.
    pub(crate) brokers: Brokers,
    /// Queue jobs are taken from.
    pub(crate) queue: String,
    /// Jobs run at once; also the prefetch.
    pub(crate) concurrency: u16,
    /// Deliveries of a job before it is dead-lettered.
    pub(crate) delivery_limit: u32,
    /// Largest job message accepted, in bytes.
    pub(crate) max_job_bytes: usize,
    /// How log output is batched into events.
    pub(crate) batching: LogBatching,
    /// Whether every event (rejections and dead-letter results too) is
    /// also copied to the events exchange.
    pub(crate) events_exchange: EventsExchange,
    /// Keys a job must be signed with; empty: signatures are not checked.
    pub(crate) trusted_keys: Vec<VerifyingKey>,
    /// Longest validity (`expires_at - issued_at`) of a signed job.
    pub(crate) max_signed_validity: Duration,
    /// Free disk the worker must see to take jobs.
    pub(crate) disk: DiskWatch,
    /// Prefixes a job's image.repository must have; empty: any.
    pub(crate) allowed_repositories: Vec<String>,
    /// How long running jobs may take to finish at shutdown.
    pub(crate) drain_timeout: Duration,
    /// How long a dead-lettered job's masked copy stays in the parked queue.
    pub(crate) parked_ttl: Duration,
}

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsumerError {
    /// The broker could not be reached.
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(String),
    /// The broker closed the consumer or the connection was lost while
    /// consuming. Unfinished jobs stay unacked and are redelivered.
    #[error("lost the job consumer: {0}")]
    Lost(String),
    /// A queue name too long for AMQP once `.dead` is appended.
    #[error(
        "queue name {0:?} is too long: with `.dead` appended it exceeds AMQP's 255-byte limit"
    )]
    NameTooLong(String),
    /// A queue or exchange exists with other arguments than this worker's
    /// (for example another `--delivery-limit`). Retrying cannot help.
    #[error("RabbitMQ refused {what}: {message}; start the worker with the settings the existing queue was declared with, or delete the queue")]
    Mismatch {
        /// The operation.
        what: String,
        /// The broker's words.
        message: String,
    },
    /// Declaring queues or starting the consumer failed.
    #[error("RabbitMQ refused {what}: {message}")]
    Broker {
        /// The operation.
        what: String,
        /// The broker's words.
        message: String,
    },
}

/// Where the consumer reports on itself: metrics and readiness.
#[derive(Clone)]
pub(crate) struct Observers {
    /// The worker's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Set while the consumer is attached to the job queue.
    pub(crate) readiness: Arc<Readiness>,
}

/// What every job task needs, shared.
struct JobContext {
    pool: Pool,
    /// What a lost connection kept back, for the next one.
    outbox: Outbox,
    pipeline: Pipeline,
    settings: Settings,
    jobs: RunningJobs,
    /// Nonces of signed jobs accepted by any worker.
    nonces: AdmittedNonces,
    metrics: Arc<Metrics>,
}

/// Consumes jobs until `shutdown` is cancelled, failing over to the next
/// broker node (and backing off once every node failed) when the
/// connection is lost. Returns only at shutdown, or with an error that a
/// retry cannot fix.
pub(crate) async fn run_until_shutdown(
    settings: &Settings,
    pipeline: Pipeline,
    shutdown: CancellationToken,
    observers: Observers,
) -> Result<(), ConsumerError> {
    let mut failover = Failover::new(settings.brokers.clone());
    let outbox = Outbox::default();
    for broker in failover.brokers().iter() {
        observers.metrics.amqp_node(broker.node(), false);
    }
    loop {
        let started = Instant::now();
        let broker = failover.current().clone();
        let outcome = run(
            settings,
            &broker,
            pipeline.clone(),
            shutdown.clone(),
            &observers,
            &outbox,
        )
        .await;
        observers.readiness.set_consuming(false);
        observers.metrics.amqp_node(broker.node(), false);
        match outcome {
            Ok(()) => return Ok(()),
            Err(e @ (ConsumerError::NameTooLong(_) | ConsumerError::Mismatch { .. })) => {
                return Err(e)
            }
            Err(e) => {
                let delay = failover.failed(started.elapsed());
                observers.metrics.reconnecting();
                tracing::warn!(error = %e, next = %failover.current(), retry_in = ?delay, "RabbitMQ unavailable; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {
                        outbox.warn_unsent();
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// How long the tasks of a lost connection get to end before the worker
/// reconnects without them: a stopped job removes its containers (the
/// builder's stop takes up to 10 s) and settles its delivery (bounded by
/// [`settle`]).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// How often the free disk is looked at (see [`intake`]).
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Consumes jobs on one connection until `shutdown` is cancelled (then
/// stops taking jobs and drains the running ones) or the connection is
/// lost (then the running jobs are stopped unacked, for redelivery).
async fn run(
    settings: &Settings,
    node: &BrokerUrl,
    pipeline: Pipeline,
    shutdown: CancellationToken,
    observers: &Observers,
    outbox: &Outbox,
) -> Result<(), ConsumerError> {
    // The parked queue's name is the longest one derived from it.
    if amqp_topology::parked_queue(&settings.queue).len() > 255 {
        return Err(ConsumerError::NameTooLong(settings.queue.clone()));
    }
    let pool = connection_pool(node)?;
    let connection = pool
        .get()
        .await
        .map_err(|e| ConsumerError::Connect(format!("{node}: {e}")))?;
    tracing::info!(%node, "connected to RabbitMQ");
    observers.metrics.amqp_node(node.node(), true);
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("a channel"))?;
    topology::declare(&channel, settings).await?;
    // Before the catch-up, which then reads the held finished markers too.
    let held = outbox.publish(&connection).await?;
    if held > 0 {
        tracing::info!(messages = held, "sent what the lost connection held back");
    }
    let jobs = RunningJobs::default();
    let nonces = AdmittedNonces::default();
    // Every cancel and admission sent so far is known before the first
    // job is taken.
    let listeners = control::Listeners {
        jobs: &jobs,
        nonces: &nonces,
        trusted_keys: &settings.trusted_keys,
    };
    let mut cancels = control::catch_up(&connection, &listeners).await?;
    // Before the consumers: a prefetch applies to consumers started after
    // it, and bounds the dead letters in hand as it bounds the jobs.
    channel
        .basic_qos(settings.concurrency, BasicQosOptions::default())
        .await
        .map_err(broker("the prefetch setting"))?;
    let mut dead_letters = dead_letters::consume(&channel, settings).await?;
    // An empty tag lets the broker choose one when the id is too long.
    let consumer_tag = ShortString::try_new(pipeline.worker_id()).unwrap_or_default();
    let mut jobs_in = JobIntake::new(&channel, settings, consumer_tag, observers);
    jobs_in.check_disk().await?;
    observers.readiness.set_consuming(true);
    let mut disk_checks = tokio::time::interval(DISK_CHECK_EVERY);

    let context = Arc::new(JobContext {
        pool,
        outbox: outbox.clone(),
        pipeline,
        settings: settings.clone(),
        jobs,
        nonces,
        metrics: Arc::clone(&observers.metrics),
    });
    let mut running = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            delivery = jobs_in.next() => match delivery {
                Some(Ok(delivery)) => {
                    running.spawn(job::handle_delivery(delivery, Arc::clone(&context)));
                }
                Some(Err(e)) => break Err(ConsumerError::Lost(e.to_string())),
                None => break Err(ConsumerError::Lost("the broker cancelled the consumer".into())),
            },
            _ = disk_checks.tick() => {
                if let Err(e) = jobs_in.check_disk().await {
                    break Err(e);
                }
            }
            control = cancels.next() => match control {
                Some(Ok(delivery)) => {
                    let listeners = control::Listeners {
                        jobs: &context.jobs,
                        nonces: &context.nonces,
                        trusted_keys: &context.settings.trusted_keys,
                    };
                    control::on_delivery(&delivery, &listeners).await;
                }
                Some(Err(e)) => break Err(ConsumerError::Lost(e.to_string())),
                None => break Err(ConsumerError::Lost("the broker cancelled the cancel stream consumer".into())),
            },
            dead = dead_letters.next() => match dead {
                Some(Ok(delivery)) => {
                    running.spawn(dead_letters::handle(delivery, Arc::clone(&context)));
                }
                Some(Err(e)) => break Err(ConsumerError::Lost(e.to_string())),
                None => break Err(ConsumerError::Lost("the broker cancelled the dead-letter consumer".into())),
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    observers.readiness.set_consuming(false);
    match &outcome {
        Ok(()) => {
            let cancel = BasicCancelOptions::default();
            jobs_in.stop().await;
            let _ = channel.basic_cancel(dead_letters.tag(), cancel).await;
            drain(&mut running, &context.jobs, settings.drain_timeout).await;
            // An ack is a frame queued for the socket: closing the channel
            // (which waits for the broker's close-ok) makes sure the acks
            // of the drained jobs were sent before the process exits.
            let _ = channel
                .close(200, ShortString::from("worker stopping"))
                .await;
            let _ = connection
                .close(200, ShortString::from("worker stopping"))
                .await;
        }
        Err(e) => {
            // Their deliveries can no longer be acked: the broker redelivers
            // them, so finishing here would only report a job twice.
            tracing::warn!(error = %e, jobs = context.jobs.len(), "connection lost; stopping running jobs");
            context.jobs.stop_all(Stop::Requeue);
            let stopped = tokio::time::timeout(STOP_LIMIT, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if stopped.is_err() {
                // The worker must reconnect: a task stuck on the lost
                // connection is given up (its job is redelivered).
                tracing::warn!(tasks = running.len(), limit = ?STOP_LIMIT, "tasks of the lost connection did not end; abandoning them");
                running.shutdown().await;
            }
        }
    }
    outcome
}

/// Lets the running jobs finish within `limit`, then stops the rest and
/// requeues them.
async fn drain(running: &mut JoinSet<()>, jobs: &RunningJobs, limit: Duration) {
    if running.is_empty() {
        return;
    }
    tracing::info!(
        jobs = jobs.len(),
        ?limit,
        "shutting down: finishing running jobs"
    );
    let finished = tokio::time::timeout(limit, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            jobs = jobs.len(),
            "drain timeout: stopping and requeueing running jobs"
        );
        jobs.stop_all(Stop::Requeue);
        while running.join_next().await.is_some() {}
    }
}
