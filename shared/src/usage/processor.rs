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
    AccountUsage, Commit, CommitOutcome, CounterKey, MAX_COMMIT_IDENTIFIERS, PendingSend, RecordedUsage, UsageLedger,
};
use super::period::period_of;
use super::report::{Rejection, STRIPE_PAST_WINDOW_SECS, UsageEvent, ValidUsage};
use crate::config::{Aggregation, Catalog};
use crate::store::AccountId;
use crate::stripe::meter_events::{MeterEvent, MeterEventSink, STREAM_BATCH};
use crate::telemetry;

/// Stripe deduplicates identifiers for at least 24 hours: a pending send older than this is
/// not resent automatically (it could be counted twice); `billing usage reconcile` shows it.
pub const RESEND_WINDOW_SECS: i64 = 23 * 3600;
/// Identifier records outlive the oldest timestamp the edge accepts, so a repeat of anything
/// still sendable is recognised.
pub const IDENTIFIER_RETENTION_SECS: i64 = STRIPE_PAST_WINDOW_SECS + 86_400;
/// The most unconfirmed sends a counter holds before new use waits in the queue: about 100 KB
/// of the item's 400 KB.
pub const MAX_PENDING_SENDS: usize = 500;
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
        let reject = |counts: &mut UsageCounts, index: usize, rejection: &Rejection| {
            counts.rejected += 1;
            telemetry::count("UsageRejected");
            tracing::warn!(
                message_id = ids[index].as_deref().unwrap_or(""),
                reason = rejection.reason(),
                "usage report refused; not counted, not sent"
            );
        };
        // Parsed, with a usable identifier, once per identifier in the batch.
        let mut parsed: Vec<(usize, UsageEvent, i64)> = Vec::new();
        let mut seen = HashSet::new();
        for (index, record) in event.records.iter().enumerate() {
            // SQS's SentTimestamp (milliseconds) stands in for a report without a timestamp.
            let queued_at = record
                .attributes
                .get("SentTimestamp")
                .and_then(|ms| ms.parse::<i64>().ok())
                .map_or(now, |ms| ms / 1000);
            let body = record.body.as_deref().unwrap_or_default();
            let checked = UsageEvent::parse(body).and_then(|report| match report.identifier_checked() {
                Ok(_) => Ok(report),
                Err(rejection) => Err(rejection),
            });
            let report = match checked {
                Ok(report) => report,
                Err(rejection) => {
                    reject(&mut counts, index, &rejection);
                    continue;
                }
            };
            if !seen.insert(report.identifier.clone().unwrap_or_default()) {
                counts.duplicates += 1;
                continue;
            }
            parsed.push((index, report, queued_at));
        }
        let identifiers: Vec<&str> = parsed.iter().filter_map(|(_, r, _)| r.identifier.as_deref()).collect();
        let recorded = match self.ledger.recorded(&identifiers).await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(%error, "could not read usage identifiers; the batch will be retried");
                failed.extend(parsed.iter().map(|(index, _, _)| *index));
                HashMap::new()
            }
        };
        let mut reports = Vec::new();
        let mut repeats = Vec::new();
        for (index, report, queued_at) in parsed {
            if failed.contains(&index) {
                continue;
            }
            // A report counted before is not judged again: the catalog or the clock may have
            // moved since, and its send, if pending, must still go.
            if let Some(earlier) = report.identifier.as_deref().and_then(|id| recorded.get(id)) {
                repeats.push((index, earlier.clone()));
                continue;
            }
            match report.validate(&self.catalog, now, queued_at) {
                Ok(usage) => reports.push(Report { message: index, usage }),
                Err(rejection) => reject(&mut counts, index, &rejection),
            }
        }
        let outgoing = self.commit_new(&reports, &repeats, now, &mut counts, &mut failed).await;
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
        repeats: &[(usize, RecordedUsage)],
        now: i64,
        counts: &mut UsageCounts,
        failed: &mut HashSet<usize>,
    ) -> Vec<Outgoing> {
        let mut outgoing: Vec<Outgoing> = Vec::new();
        let mut accounts: HashMap<AccountId, Option<AccountUsage>> = HashMap::new();
        let wanted = reports
            .iter()
            .map(|r| &r.usage.account)
            .chain(repeats.iter().map(|(_, earlier)| &earlier.counter.account));
        for account in wanted {
            if !accounts.contains_key(account) {
                let usage = match self.ledger.account_usage(account).await {
                    Ok(usage) => Some(usage),
                    Err(error) => {
                        tracing::warn!(%error, "could not read the account's usage; its reports will be retried");
                        None
                    }
                };
                accounts.insert(account.clone(), usage);
            }
        }
        let mut pending_sends: HashMap<String, usize> = HashMap::new();
        for (message, earlier) in repeats {
            let Some(Some(usage)) = accounts.get(&earlier.counter.account) else {
                failed.insert(*message);
                continue;
            };
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
                        Some(at) => outgoing[*at].messages.push(*message),
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
                                messages: vec![*message],
                            });
                        }
                    }
                }
            }
        }
        let mut groups: BTreeMap<CounterKey, Vec<&Report>> = BTreeMap::new();
        for report in reports {
            let Some(Some(usage)) = accounts.get(&report.usage.account) else {
                failed.insert(report.message);
                continue;
            };
            let period = period_of(usage, &report.usage.meter, report.usage.timestamp);
            let key = CounterKey {
                account: report.usage.account.clone(),
                meter: report.usage.meter.clone(),
                period_start: period.start,
            };
            groups.entry(key).or_default().push(report);
        }
        for (key, group) in groups {
            let usage = accounts.get(&key.account).and_then(Option::as_ref);
            // The account's link is written at checkout, before the entitlement names the
            // customer: use made right after checkout is billed too.
            let customer = usage.and_then(|usage| {
                usage
                    .customer_id
                    .clone()
                    .or_else(|| usage.entitlement.as_ref()?.customer_id.clone())
            });
            let stored = usage.and_then(|usage| {
                usage
                    .counters
                    .iter()
                    .find(|c| c.meter == key.meter && c.period_start == key.period_start)
            });
            // Sends Stripe has not confirmed stay on the counter; past the resend window they
            // are given up (counted and logged) and cleared, and while many are fresh (Stripe
            // down) new use waits in the queue instead of growing the item.
            let (fresh, mut expired): (Vec<&String>, Vec<&String>) = stored
                .map(|c| {
                    c.pending
                        .iter()
                        .partition(|(_, send)| send.committed_at >= now - RESEND_WINDOW_SECS)
                })
                .map(|(fresh, expired): (Vec<_>, Vec<_>)| {
                    (
                        fresh.into_iter().map(|(id, _)| id).collect(),
                        expired.into_iter().map(|(id, _)| id).collect(),
                    )
                })
                .unwrap_or_default();
            if fresh.len() >= MAX_PENDING_SENDS {
                telemetry::count("UsageDeferred");
                tracing::warn!(
                    pending = fresh.len(),
                    "Stripe has not confirmed many sends of this counter; new use waits in the queue"
                );
                failed.extend(group.iter().map(|r| r.message));
                continue;
            }
            for chunk in group.chunks(MAX_COMMIT_IDENTIFIERS) {
                let (mut commit, sends) = plan_commit(&key, chunk, customer.as_deref(), now);
                commit.expired = std::mem::take(&mut expired).into_iter().cloned().collect();
                counts.commits += 1;
                match self.commit_with_retries(&commit).await {
                    Ok(CommitOutcome::Committed) => {
                        if !commit.expired.is_empty() {
                            counts.unconfirmed += commit.expired.len();
                            telemetry::count("UsageUnconfirmed");
                            tracing::error!(
                                sends = commit.expired.len(),
                                "usage sends unconfirmed past Stripe's deduplication window were cleared; compare with `billing usage reconcile`"
                            );
                        }
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

    /// A commit, tried again on a failure (a concurrent transaction on a hot counter cancels
    /// one of the two): a retry of one that did go through comes back `Taken`, never twice.
    async fn commit_with_retries(&self, commit: &Commit) -> Result<CommitOutcome, crate::store::StoreError> {
        let mut attempt = 0;
        loop {
            match self.ledger.commit(commit).await {
                Err(_) if attempt < 2 => {
                    attempt += 1;
                    let wait = std::time::Duration::from_millis(fastrand::u64(2..10) << attempt);
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
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
        expired: Vec::new(),
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
