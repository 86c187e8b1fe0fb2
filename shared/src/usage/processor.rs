//! The `usage` queue's consumer: validates each report, drops repeats, commits what is new to
//! the local counters (one transaction per counter and batch), and sends it to Stripe — summed
//! per account, meter and period where the meter sums, under an identifier derived from the
//! reports it covers — in stream requests of up to 100 events. A message fails (and SQS
//! redelivers it) only while its send is not confirmed; its retry finds it committed and
//! resends the same send, which Stripe deduplicates, so nothing is lost or counted twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use sha2::{Digest, Sha256};

use super::ledger::{
    AccountUsage, Commit, CommitOutcome, CounterKey, MAX_COMMIT_IDENTIFIERS, PendingSend, UsageLedger,
};
use super::period::period_of;
use super::report::{STRIPE_PAST_WINDOW_SECS, UsageEvent, ValidUsage};
use crate::config::{Aggregation, Catalog};
use crate::stripe::meter_events::{MeterEvent, MeterEventSink, STREAM_BATCH};
use crate::telemetry;

/// Stripe deduplicates identifiers for at least 24 hours: a pending send older than this is
/// not resent automatically (it could be counted twice); `billing usage reconcile` shows it.
pub const RESEND_WINDOW_SECS: i64 = 23 * 3600;
/// Identifier records outlive the oldest timestamp the edge accepts, so a repeat of anything
/// still sendable is recognised.
pub const IDENTIFIER_RETENTION_SECS: i64 = STRIPE_PAST_WINDOW_SECS + 86_400;
/// Counters are kept a year and a month for the app's history and reconciliation.
pub const COUNTER_RETENTION_SECS: i64 = 400 * 86_400;

/// What one batch did, for the log line and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageCounts {
    pub counted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Counted locally, not sent: the account has no Stripe customer.
    pub unbilled: usize,
    /// Committed earlier, still pending and now resent.
    pub resent: usize,
    /// Pending for longer than Stripe deduplicates: left for reconciliation.
    pub unconfirmed: usize,
    pub failed: usize,
    pub stripe_requests: usize,
    pub commits: usize,
}

pub struct UsageProcessor<L, M> {
    pub ledger: L,
    pub meter_events: M,
    pub catalog: Catalog,
}

/// A valid report of the batch and the message that carried it.
struct Report {
    message: usize,
    usage: ValidUsage,
}

/// A send to make and the messages that wait on it.
struct Outgoing {
    counter: CounterKey,
    event: MeterEvent,
    messages: Vec<usize>,
}

/// The identifier of the meter event that carries a sum of reports: the same reports always
/// make the same identifier, so a retried aggregate is a repeat to Stripe.
pub fn aggregate_identifier(identifiers: &[&str]) -> String {
    let mut sorted: Vec<&str> = identifiers.to_vec();
    sorted.sort_unstable();
    let mut hash = Sha256::new();
    for id in sorted {
        hash.update(id.as_bytes());
        hash.update(b"\n");
    }
    format!("usage-sum-{}", &hex::encode(hash.finalize())[..40])
}

impl<L: UsageLedger, M: MeterEventSink> UsageProcessor<L, M> {
    pub async fn handle_batch(&self, event: SqsEvent, now: i64) -> SqsBatchResponse {
        let (response, counts) = self.process(event, now).await;
        tracing::info!(
            counted = counts.counted,
            duplicates = counts.duplicates,
            rejected = counts.rejected,
            unbilled = counts.unbilled,
            resent = counts.resent,
            unconfirmed = counts.unconfirmed,
            failed = counts.failed,
            stripe_requests = counts.stripe_requests,
            "usage batch done"
        );
        response
    }

    /// The batch's outcome: the messages to retry, and the counts.
    pub async fn process(&self, event: SqsEvent, now: i64) -> (SqsBatchResponse, UsageCounts) {
        let mut counts = UsageCounts::default();
        let ids: Vec<Option<String>> = event
            .records
            .iter()
            .map(|record| record.message_id.clone().filter(|id| !id.is_empty()))
            .collect();
        let mut failed: HashSet<usize> = HashSet::new();
        let mut reports = Vec::new();
        let mut seen = HashSet::new();
        for (index, record) in event.records.iter().enumerate() {
            // SQS's SentTimestamp (milliseconds) stands in for a report without a timestamp.
            let queued_at = record
                .attributes
                .get("SentTimestamp")
                .and_then(|ms| ms.parse::<i64>().ok())
                .map_or(now, |ms| ms / 1000);
            let body = record.body.as_deref().unwrap_or_default();
            match UsageEvent::validate_body(body, &self.catalog, now, queued_at) {
                Ok(usage) if !seen.insert(usage.identifier.clone()) => counts.duplicates += 1,
                Ok(usage) => reports.push(Report { message: index, usage }),
                Err(rejection) => {
                    counts.rejected += 1;
                    telemetry::count("UsageRejected");
                    tracing::warn!(message_id = ids[index].as_deref().unwrap_or(""), reason = rejection.reason(),
                        error = %rejection, "usage report refused; not counted, not sent");
                }
            }
        }
        let outgoing = self.commit_new(&reports, now, &mut counts, &mut failed).await;
        self.send(outgoing, &mut counts, &mut failed).await;
        counts.failed = failed.len();
        if counts.counted > 0 {
            telemetry::count("UsageBatches");
        }
        let mut response = SqsBatchResponse::default();
        let mut unnamed = false;
        for index in failed {
            match &ids[index] {
                Some(id) => {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id.clone();
                    response.batch_item_failures.push(failure);
                }
                None => unnamed = true,
            }
        }
        if unnamed {
            // A failed message without an id cannot be named: the whole batch comes back, which
            // the identifier records make harmless.
            response.batch_item_failures = ids
                .iter()
                .flatten()
                .map(|id| {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id.clone();
                    failure
                })
                .collect();
        }
        (response, counts)
    }

    /// Commits the new reports and gathers every send to make: theirs, and the pending sends
    /// of reports seen again.
    async fn commit_new(
        &self,
        reports: &[Report],
        now: i64,
        counts: &mut UsageCounts,
        failed: &mut HashSet<usize>,
    ) -> Vec<Outgoing> {
        let mut outgoing: Vec<Outgoing> = Vec::new();
        if reports.is_empty() {
            return outgoing;
        }
        let identifiers: Vec<&str> = reports.iter().map(|r| r.usage.identifier.as_str()).collect();
        let recorded = match self.ledger.recorded(&identifiers).await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(%error, "could not read usage identifiers; the batch will be retried");
                failed.extend(reports.iter().map(|r| r.message));
                return outgoing;
            }
        };
        let mut accounts: HashMap<&str, Option<AccountUsage>> = HashMap::new();
        for report in reports {
            let account = report.usage.account.as_str();
            if !accounts.contains_key(account) {
                let usage = match self.ledger.account_usage(&report.usage.account).await {
                    Ok(usage) => Some(usage),
                    Err(error) => {
                        tracing::warn!(%error, "could not read the account's usage; its reports will be retried");
                        None
                    }
                };
                accounts.insert(account, usage);
            }
        }
        let mut groups: BTreeMap<CounterKey, Vec<&Report>> = BTreeMap::new();
        let mut pending_sends: HashMap<String, usize> = HashMap::new();
        for report in reports {
            let Some(Some(usage)) = accounts.get(report.usage.account.as_str()) else {
                failed.insert(report.message);
                continue;
            };
            match recorded.get(&report.usage.identifier) {
                None => {
                    let period = period_of(usage, &report.usage.meter, report.usage.timestamp);
                    let key = CounterKey {
                        account: report.usage.account.clone(),
                        meter: report.usage.meter.clone(),
                        period_start: period.start,
                    };
                    groups.entry(key).or_default().push(report);
                }
                Some(earlier) => {
                    let pending = usage
                        .counters
                        .iter()
                        .find(|c| c.meter == earlier.counter.meter && c.period_start == earlier.counter.period_start)
                        .and_then(|c| c.pending.get(&earlier.send));
                    match pending {
                        None => counts.duplicates += 1,
                        Some(send) if send.committed_at < now - RESEND_WINDOW_SECS => {
                            counts.unconfirmed += 1;
                            telemetry::count("UsageUnconfirmed");
                            tracing::error!(send = %earlier.send, "a usage send stayed unconfirmed past Stripe's deduplication window; not resent (see `billing usage reconcile`)");
                        }
                        Some(send) => {
                            counts.resent += 1;
                            match pending_sends.get(&earlier.send) {
                                Some(at) => outgoing[*at].messages.push(report.message),
                                None => {
                                    pending_sends.insert(earlier.send.clone(), outgoing.len());
                                    outgoing.push(Outgoing {
                                        counter: earlier.counter.clone(),
                                        event: MeterEvent {
                                            identifier: earlier.send.clone(),
                                            event_name: send.event_name.clone(),
                                            customer_id: send.customer_id.clone(),
                                            value: send.value,
                                            timestamp: send.timestamp,
                                        },
                                        messages: vec![report.message],
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        for (key, group) in groups {
            let customer = accounts
                .get(key.account.as_str())
                .and_then(|usage| usage.as_ref()?.entitlement.as_ref()?.customer_id.clone());
            for chunk in group.chunks(MAX_COMMIT_IDENTIFIERS) {
                let (commit, sends) = plan_commit(&key, chunk, customer.as_deref(), now);
                counts.commits += 1;
                match self.ledger.commit(&commit).await {
                    Ok(CommitOutcome::Committed) => {
                        counts.counted += chunk.len();
                        if customer.is_none() {
                            counts.unbilled += chunk.len();
                            telemetry::count("UsageUnbilled");
                        }
                        outgoing.extend(sends);
                    }
                    Ok(CommitOutcome::Taken(_)) => {
                        // Another invocation counted some of them meanwhile: all of these come
                        // back, and their retry sorts repeats from new.
                        failed.extend(chunk.iter().map(|r| r.message));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not commit usage; the reports will be retried");
                        failed.extend(chunk.iter().map(|r| r.message));
                    }
                }
            }
        }
        outgoing
    }

    /// Sends in stream requests of up to 100 events, then confirms what Stripe accepted.
    async fn send(&self, outgoing: Vec<Outgoing>, counts: &mut UsageCounts, failed: &mut HashSet<usize>) {
        for chunk in outgoing.chunks(STREAM_BATCH) {
            let events: Vec<MeterEvent> = chunk.iter().map(|o| o.event.clone()).collect();
            counts.stripe_requests += 1;
            if let Err(error) = self.meter_events.send(&events).await {
                tracing::warn!(%error, events = events.len(), "Stripe did not take the meter events; their reports will be retried");
                telemetry::count("UsageSendFailed");
                failed.extend(chunk.iter().flat_map(|o| o.messages.iter().copied()));
                continue;
            }
            let mut by_counter: BTreeMap<&CounterKey, Vec<&str>> = BTreeMap::new();
            for sent in chunk {
                by_counter
                    .entry(&sent.counter)
                    .or_default()
                    .push(&sent.event.identifier);
            }
            for (counter, sends) in by_counter {
                if let Err(error) = self.ledger.confirm(counter, &sends).await {
                    // Sent but still pending: the retry resends, which Stripe drops as a repeat.
                    tracing::warn!(%error, "could not confirm sent usage; the reports will be retried");
                    let confirmed: HashSet<&str> = sends.into_iter().collect();
                    failed.extend(
                        chunk
                            .iter()
                            .filter(|o| confirmed.contains(o.event.identifier.as_str()))
                            .flat_map(|o| o.messages.iter().copied()),
                    );
                }
            }
        }
    }
}

/// One commit of reports of one counter, and the sends it makes: one per report of a count
/// meter, one sum for a sum meter; none for an account without a customer.
fn plan_commit(key: &CounterKey, reports: &[&Report], customer: Option<&str>, now: i64) -> (Commit, Vec<Outgoing>) {
    let aggregation = reports.first().map_or(Aggregation::Sum, |r| r.usage.aggregation);
    let amount: f64 = reports.iter().map(|r| r.usage.amount()).sum();
    let mut identifiers = Vec::with_capacity(reports.len());
    let mut sends = BTreeMap::new();
    let mut outgoing = Vec::new();
    let pending = |value: f64, timestamp: i64, report: &Report, customer: &str| PendingSend {
        customer_id: customer.to_owned(),
        event_name: report.usage.event_name.clone(),
        value,
        timestamp,
        committed_at: now,
    };
    let mut add = |send: String, pending: PendingSend, messages: Vec<usize>| {
        outgoing.push(Outgoing {
            counter: key.clone(),
            event: MeterEvent {
                identifier: send.clone(),
                event_name: pending.event_name.clone(),
                customer_id: pending.customer_id.clone(),
                value: pending.value,
                timestamp: pending.timestamp,
            },
            messages,
        });
        sends.insert(send, pending);
    };
    match aggregation {
        Aggregation::Count => {
            for report in reports {
                let send = report.usage.identifier.clone();
                identifiers.push((report.usage.identifier.clone(), send.clone()));
                if let Some(customer) = customer {
                    add(
                        send,
                        pending(report.usage.value, report.usage.timestamp, report, customer),
                        vec![report.message],
                    );
                }
            }
        }
        Aggregation::Sum => {
            let ids: Vec<&str> = reports.iter().map(|r| r.usage.identifier.as_str()).collect();
            let send = aggregate_identifier(&ids);
            identifiers.extend(reports.iter().map(|r| (r.usage.identifier.clone(), send.clone())));
            if let (Some(customer), Some(first)) = (customer, reports.first()) {
                let latest = reports.iter().map(|r| r.usage.timestamp).max().unwrap_or(now);
                let messages = reports.iter().map(|r| r.message).collect();
                add(send, pending(amount, latest, first, customer), messages);
            }
        }
    }
    let commit = Commit {
        counter: key.clone(),
        identifiers,
        amount,
        sends,
        identifiers_expire_at: now + IDENTIFIER_RETENTION_SECS,
        counter_expires_at: key.period_start.max(now) + COUNTER_RETENTION_SECS,
    };
    (commit, outgoing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_identifiers_depend_on_the_reports_not_their_order_and_fit_stripe() {
        let one = aggregate_identifier(&["b", "a", "c"]);
        assert_eq!(one, aggregate_identifier(&["c", "b", "a"]));
        assert_ne!(one, aggregate_identifier(&["a", "b"]));
        // Joined with a separator: ["ab"] and ["a", "b"] differ.
        assert_ne!(aggregate_identifier(&["ab"]), aggregate_identifier(&["a", "b"]));
        assert!(one.len() <= 100 && one.starts_with("usage-sum-"));
    }
}
