//! The orchestrator's side as the tests play it: the protocol crate's
//! client plus what tests need around it (time limits, waiting for a
//! worker, reading one attempt's log).

use buildbot_protocol::client::{result_of, Client, Events};
use buildbot_protocol::{Event, EventBody, JobResult};
use std::time::Duration;

/// A connection playing the orchestrator.
pub struct Orchestrator {
    client: Client,
}

impl Orchestrator {
    /// Connects to RabbitMQ at `url`, failing after 30 s rather than
    /// hanging a test on a broker that does not answer.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let limit = Duration::from_secs(30);
        let client = tokio::time::timeout(limit, Client::connect(url))
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ at {url} did not answer within {limit:?}"))??;
        Ok(Self { client })
    }

    /// Declares the reply queue `reply_to` and starts reading it.
    pub async fn reply_queue(&self, reply_to: &str) -> anyhow::Result<ReplyQueue> {
        Ok(ReplyQueue {
            events: self.client.reply_queue(reply_to).await?,
        })
    }

    /// Publishes `body` (any bytes, valid or not) to `queue` as job
    /// `job_id` whose events go to `reply_to`, and waits for the confirm.
    pub async fn publish_job(
        &self,
        queue: &str,
        body: &[u8],
        job_id: &str,
        reply_to: Option<&str>,
    ) -> anyhow::Result<()> {
        Ok(self.client.publish(queue, body, job_id, reply_to).await?)
    }

    /// Reads the events exchange through a private queue bound with
    /// `binding_key`.
    pub async fn watch_events(&self, binding_key: &str) -> anyhow::Result<ReplyQueue> {
        Ok(ReplyQueue {
            events: self.client.watch_events(binding_key).await?,
        })
    }

    /// Deletes `queue` with its messages.
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        Ok(self.client.delete_queue(queue).await?)
    }

    /// Asks every worker to cancel job `job_id`.
    pub async fn cancel(&self, job_id: uuid::Uuid) -> anyhow::Result<()> {
        Ok(self.client.cancel(job_id).await?)
    }

    /// [`Orchestrator::cancel`], signed with `key`.
    pub async fn cancel_signed(
        &self,
        job_id: uuid::Uuid,
        key: &buildbot_protocol::signature::SigningKey,
    ) -> anyhow::Result<()> {
        Ok(self.client.cancel_signed(job_id, key).await?)
    }

    /// Waits until `queue` exists and has at least one consumer.
    pub async fn wait_for_consumer(&self, queue: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.consumer_count(queue).await.unwrap_or(0) > 0 {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no worker consumes {queue} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Consumers of `queue`; an error when it does not exist.
    pub async fn consumer_count(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.client.queue_counts(queue).await?.consumers)
    }

    /// Takes the next message of `queue`, if any.
    pub async fn take_message(&self, queue: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.client.take_message(queue).await?)
    }

    /// Messages ready in `queue`; an error when it does not exist.
    pub async fn message_count(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.client.queue_counts(queue).await?.messages)
    }
}

/// A reply queue being read.
pub struct ReplyQueue {
    events: Events,
}

/// Every event of one attempt, ending with its result.
#[derive(Debug)]
pub struct Attempt {
    /// All events in arrival order, the result last.
    pub events: Vec<Event>,
}

impl Attempt {
    /// The result event's body.
    pub fn result(&self) -> &JobResult {
        result_of(&self.events).expect("an attempt always ends with its result")
    }

    /// The concatenated text of every log event.
    pub fn log_text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log(log) => Some(log.text.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl ReplyQueue {
    /// Reads (and acks) events until a result arrives or `limit` passes.
    pub async fn until_result(&mut self, limit: Duration) -> anyhow::Result<Attempt> {
        let events = self
            .until(limit, |e| matches!(e.body, EventBody::Result(_)))
            .await?;
        Ok(Attempt { events })
    }

    /// Reads (and acks) events up to and including the first one `wanted`
    /// accepts; an error when the queue ends or `limit` passes first.
    pub async fn until(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        let read = async {
            while let Some(event) = self.events.next().await {
                let event = event?;
                let done = wanted(&event);
                events.push(event);
                if done {
                    return Ok(());
                }
            }
            anyhow::bail!("the reply queue consumer ended")
        };
        match tokio::time::timeout(limit, read).await {
            Ok(outcome) => outcome.map(|()| events),
            Err(_) => anyhow::bail!("nothing wanted within {limit:?}; events so far: {events:#?}"),
        }
    }

    /// The next event if one arrives within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> anyhow::Result<Option<Event>> {
        match tokio::time::timeout(limit, self.events.next()).await {
            Ok(Some(event)) => Ok(Some(event?)),
            Ok(None) => anyhow::bail!("the reply queue consumer ended"),
            Err(_) => Ok(None),
        }
    }
}

/// Whether `event` is a log event whose text contains `needle`.
pub fn log_contains(event: &Event, needle: &str) -> bool {
    matches!(&event.body, EventBody::Log(log) if log.text.contains(needle))
}
