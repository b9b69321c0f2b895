//! The job consumer, paused while the worker lacks disk: below
//! `--min-free-disk` the consumer is cancelled, so the broker gives the
//! queue's jobs to other workers (a nack would count as a delivery, and
//! dead-letter a job after a few), and `/readyz` says why; once space
//! returns it consumes again. Deliveries already in hand when it pauses
//! still run.

use super::connection::broker;
use super::{ConsumerError, Observers, Settings};
use crate::observe::disk::DiskWatch;
use crate::observe::metrics::Metrics;
use crate::observe::readiness::Readiness;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Consumer};
use std::sync::Arc;

/// The job queue's consumer on one channel, started and cancelled as the
/// disk allows.
pub(super) struct JobIntake<'a> {
    channel: &'a Channel,
    queue: ShortString,
    tag: ShortString,
    concurrency: u16,
    disk: DiskWatch,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    consumer: Option<Consumer>,
    /// The consumer was cancelled; what it still has is read to its end.
    cancelled: bool,
}

impl<'a> JobIntake<'a> {
    /// Not consuming yet: [`JobIntake::check_disk`] starts it.
    pub(super) fn new(
        channel: &'a Channel,
        settings: &Settings,
        tag: ShortString,
        observers: &Observers,
    ) -> Self {
        Self {
            channel,
            queue: ShortString::from(settings.queue.as_str()),
            tag,
            concurrency: settings.concurrency,
            disk: settings.disk.clone(),
            readiness: Arc::clone(&observers.readiness),
            metrics: Arc::clone(&observers.metrics),
            consumer: None,
            cancelled: false,
        }
    }

    /// The next job delivery; pending while paused. None: the broker
    /// ended a consumer it was not asked to end.
    pub(super) async fn next(&mut self) -> Option<Result<Delivery, lapin::Error>> {
        loop {
            let Some(consumer) = self.consumer.as_mut() else {
                return std::future::pending().await;
            };
            match consumer.next().await {
                None if self.cancelled => {
                    self.consumer = None;
                    self.cancelled = false;
                }
                other => return other,
            }
        }
    }

    /// Pauses or resumes taking jobs as the free disk says.
    pub(super) async fn check_disk(&mut self) -> Result<(), ConsumerError> {
        if let Some(free) = self.disk.least_free() {
            self.metrics.disk_free(free);
        }
        let shortage = self.disk.shortage();
        let consuming = self.consumer.is_some() && !self.cancelled;
        match shortage {
            Some(why) if consuming => {
                tracing::warn!(%why, "not taking jobs until disk space returns");
                self.cancel().await;
                self.readiness.set_disk_shortage(Some(why));
            }
            Some(why) => self.readiness.set_disk_shortage(Some(why)),
            // Still reading what the cancelled consumer had: next check.
            None if self.consumer.is_some() => {}
            None => {
                self.consume().await?;
                if self.readiness.disk_shortage().is_some() {
                    tracing::info!("disk space returned; taking jobs again");
                }
                self.readiness.set_disk_shortage(None);
            }
        }
        Ok(())
    }

    async fn consume(&mut self) -> Result<(), ConsumerError> {
        let consumer = self
            .channel
            .basic_consume(
                self.queue.clone(),
                self.tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker("the consumer"))?;
        tracing::info!(queue = %self.queue, concurrency = self.concurrency, "consuming jobs");
        self.consumer = Some(consumer);
        Ok(())
    }

    async fn cancel(&mut self) {
        if let Some(consumer) = &self.consumer {
            let cancelled = self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            if let Err(e) = cancelled {
                tracing::warn!(error = %e, "could not cancel the job consumer");
            }
            self.cancelled = true;
        }
    }

    /// Stops taking jobs (at shutdown).
    pub(super) async fn stop(&mut self) {
        if !self.cancelled {
            self.cancel().await;
        }
    }
}
