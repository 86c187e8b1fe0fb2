//! The DynamoDB adapter. One table:
//!
//! | item                    | pk                 | sk             | notes                                      |
//! |-------------------------|--------------------|----------------|--------------------------------------------|
//! | account → customer link | `USER#<account>`   | `CUSTOMER`     | GSI `gsi1`: `CUSTOMER#<cus>` / `USER`      |
//! | customer → account link | `CUSTOMER#<cus>`   | `USER`         | written with the above, in one transaction |
//! | entitlement             | `USER#<account>`   | `ENTITLEMENT`  | conditional on `version`                   |
//! | our checkout session    | `SESSION#<cs>`     | `SESSION`      | TTL `expires_at`                           |
//! | subscription            | `CUSTOMER#<cus>`   | `SUB#<sub>`    | conditional on `watermark`                 |
//! | dunning record          | `CUSTOMER#<cus>`   | `DUNNING#<in>` |                                            |
//! | event ledger entry      | `EVENT#<evt>`      | `LEDGER`       | TTL `expires_at`                           |
//! | reconcile cursor        | `CURSOR#<name>`    | `CURSOR`       | conditional on `cursor_value`              |
//! | usage counter           | `USER#<account>`   | `USAGE#<meter>#<period start>` | pending sends as `pending_<id>` |
//! | usage identifier        | `USAGEID#<id>`     | `USAGE`        | TTL `expires_at`; only if absent           |
//!
//! An account's link, entitlement and usage counters share its partition (`sk >= CUSTOMER`),
//! so `GET /billing/me`, the quota and the usage function read them with one query.
//!
//! A customer's subscriptions and dunning records share its partition, so one strongly
//! consistent query reads everything an entitlement is computed from.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TransactWriteItem,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::usage::{
    AccountUsage, Commit, CommitOutcome, CounterKey, PendingSend, RecordedUsage, UsageCounter, UsageLedger,
};

type Item = HashMap<String, AttributeValue>;

pub const GSI_NAME: &str = "gsi1";
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// An abandoned lease (its invocation died) is cleaned up by TTL this long after it expired.
const ABANDONED_LEASE_RETENTION_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn backend<E: std::error::Error + 'static, R: std::fmt::Debug>(error: SdkError<E, R>) -> StoreError {
    StoreError::Backend(DisplayErrorContext(error).to_string())
}

fn to_item<T: Serialize>(value: &T, keys: &[(&str, String)]) -> Res<Item> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    for (name, value) in keys {
        item.insert((*name).to_owned(), s(value.clone()));
    }
    Ok(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Res<T> {
    serde_dynamo::from_item(item).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn string_attr(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number_attr(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The account's partition key and the attribute naming it on link items keep the names they had
/// when the account was always the user (`USER#`, `user_id`): tables written then need no
/// migration, and a one-person account is still keyed by the user's `sub`.
const ACCOUNT_ATTR: &str = "user_id";

fn account_pk(account: &AccountId) -> String {
    format!("USER#{account}")
}

fn customer_pk(customer_id: &str) -> String {
    format!("CUSTOMER#{customer_id}")
}

fn event_pk(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as the SAM template does; for tests and local runs against moto.
    pub async fn create_table(client: &Client, table: &str) -> Res<()> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|error| StoreError::Backend(error.to_string()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|error| StoreError::Backend(error.to_string()))
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(GSI_NAME)
            .key_schema(key("gsi1pk", KeyType::Hash)?)
            .key_schema(key("gsi1sk", KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("gsi1pk")?)
            .attribute_definitions(attribute("gsi1sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await
            .map_err(backend)?;
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, pk: String, sk: &str) -> Res<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(output.item)
    }

    async fn query_prefix(&self, pk: String, sk_prefix: &str) -> Res<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":prefix", s(sk_prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Writes all `items` or none: true if written, false if the transaction was cancelled (a
    /// condition failed, or a concurrent transaction touched the same items).
    async fn transact<const N: usize>(&self, items: [TransactWriteItem; N]) -> Res<bool> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(_))
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(backend(error)),
        }
    }

    /// Links written before the reverse item existed are found through the index (eventually
    /// consistent, so confirmed below); two accounts on one customer there is corruption, not a
    /// choice to make.
    async fn legacy_account_of_customer(&self, customer_id: &str) -> Res<Option<String>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI_NAME)
            .key_condition_expression("gsi1pk = :pk AND gsi1sk = :sk")
            .expression_attribute_values(":pk", s(customer_pk(customer_id)))
            .expression_attribute_values(":sk", s("USER"))
            .limit(2)
            .send()
            .await
            .map_err(backend)?;
        let accounts: Vec<String> = output
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| string_attr(item, ACCOUNT_ATTR))
            .collect();
        let account = match accounts.as_slice() {
            [] => return Ok(None),
            [account] => account.clone(),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "customer {customer_id} is linked to several accounts"
                )));
            }
        };
        // The index may still show a link that is gone: only the account's own item, read
        // consistently, says it holds. A confirmed legacy link gets its reverse item, so the
        // next lookup is one consistent read and no second account can take the customer.
        let parsed = AccountId::parse(&account).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        if self.customer_of_account(&parsed).await?.as_deref() != Some(customer_id) {
            return Ok(None);
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(customer_pk(customer_id)))
            .item("sk", s("USER"))
            .item(ACCOUNT_ATTR, s(account.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(account)),
            Err(error) if is_conditional_failure(&error) => Ok(Some(account)),
            Err(error) => Err(backend(error)),
        }
    }

    async fn put(&self, item: Item) -> Res<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

impl BillingStore for DynamoStore {
    async fn link_customer(&self, account: &AccountId, customer_id: &str) -> Res<LinkOutcome> {
        // Both directions in one transaction, each only if absent: an account has one customer and
        // a customer one account, and the reverse item is read with a consistent GetItem.
        let forward = Put::builder()
            .table_name(&self.table)
            .item("pk", s(account_pk(account)))
            .item("sk", s("CUSTOMER"))
            .item("gsi1pk", s(customer_pk(customer_id)))
            .item("gsi1sk", s("USER"))
            .item(ACCOUNT_ATTR, s(account.as_str()))
            .item("customer_id", s(customer_id))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let reverse = Put::builder()
            .table_name(&self.table)
            .item("pk", s(customer_pk(customer_id)))
            .item("sk", s("USER"))
            .item(ACCOUNT_ATTR, s(account.as_str()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let both = [
            TransactWriteItem::builder().put(forward).build(),
            TransactWriteItem::builder().put(reverse).build(),
        ];
        if self.transact(both).await? {
            return Ok(LinkOutcome::Linked);
        }
        // Which condition failed is read back rather than taken from the cancellation reasons,
        // which not every DynamoDB implementation fills in.
        if let Some(existing) = self.customer_of_account(account).await? {
            return Ok(LinkOutcome::AlreadyLinked(existing));
        }
        match self.account_of_customer(customer_id).await? {
            Some(owner) => Ok(LinkOutcome::CustomerTaken(owner)),
            None => Err(StoreError::Backend(format!(
                "linking account {account} to {customer_id} was cancelled without a conflict"
            ))),
        }
    }

    async fn unlink_customer(&self, account: &AccountId, customer_id: &str) -> Res<bool> {
        let forward = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(account_pk(account)))
            .key("sk", s("CUSTOMER"))
            .condition_expression("customer_id = :customer")
            .expression_attribute_values(":customer", s(customer_id))
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let reverse = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(customer_pk(customer_id)))
            .key("sk", s("USER"))
            .build()
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let both = [
            TransactWriteItem::builder().delete(forward).build(),
            TransactWriteItem::builder().delete(reverse).build(),
        ];
        if self.transact(both).await? {
            return Ok(true);
        }
        // The condition failed — or a concurrent transaction on the same items did: only a
        // read tells which, and a link still in place must not be reported gone.
        match self.customer_of_account(account).await? {
            Some(linked) if linked == customer_id => Err(StoreError::Backend(format!(
                "unlinking {customer_id} from {account} conflicted with another write"
            ))),
            _ => Ok(false),
        }
    }

    async fn customer_of_account(&self, account: &AccountId) -> Res<Option<String>> {
        Ok(self
            .get(account_pk(account), "CUSTOMER")
            .await?
            .and_then(|item| string_attr(&item, "customer_id")))
    }

    async fn account_of_customer(&self, customer_id: &str) -> Res<Option<AccountId>> {
        let raw = match self.get(customer_pk(customer_id), "USER").await? {
            Some(item) => string_attr(&item, ACCOUNT_ATTR),
            None => self.legacy_account_of_customer(customer_id).await?,
        };
        raw.map(|raw| AccountId::parse(&raw).map_err(|error| StoreError::Corrupt(error.to_string())))
            .transpose()
    }

    async fn put_checkout_session(&self, session_id: &str, account: &AccountId, expires_at: i64) -> Res<()> {
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("SESSION#{session_id}")));
        item.insert("sk".into(), s("SESSION"));
        item.insert(ACCOUNT_ATTR.into(), s(account.as_str()));
        item.insert(TTL_ATTRIBUTE.into(), n(expires_at));
        self.put(item).await
    }

    async fn checkout_session_account(&self, session_id: &str) -> Res<Option<AccountId>> {
        let raw = self
            .get(format!("SESSION#{session_id}"), "SESSION")
            .await?
            .and_then(|item| string_attr(&item, ACCOUNT_ATTR));
        raw.map(|raw| AccountId::parse(&raw).map_err(|error| StoreError::Corrupt(error.to_string())))
            .transpose()
    }

    async fn put_subscription(&self, record: &SubscriptionRecord, rule: WriteRule) -> Res<WriteOutcome> {
        // An update rather than a put, so the start of a past_due spell survives later writes
        // of the same spell (`if_not_exists`) while every other attribute is replaced.
        let mut item = to_item(record, &[])?;
        item.remove("past_due_since");
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(customer_pk(&record.customer_id)))
            .key("sk", s(format!("SUB#{}", record.subscription_id)));
        let mut sets = Vec::with_capacity(item.len() + 1);
        for (index, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{index} = :a{index}"));
            request = request
                .expression_attribute_names(format!("#a{index}"), name)
                .expression_attribute_values(format!(":a{index}"), value);
        }
        let mut expression = String::from("SET ");
        request = request.expression_attribute_names("#pds", "past_due_since");
        if record.status == crate::stripe::SubscriptionStatus::PastDue {
            sets.push("#pds = if_not_exists(#pds, :pds)".to_owned());
            expression.push_str(&sets.join(", "));
            request = request.expression_attribute_values(":pds", n(record.past_due_since.unwrap_or(record.watermark)));
        } else {
            expression.push_str(&sets.join(", "));
            expression.push_str(" REMOVE #pds");
        }
        let condition = match rule {
            WriteRule::IfNewer => "attribute_not_exists(pk) OR watermark < :watermark",
            WriteRule::IfNotOlder => "attribute_not_exists(pk) OR watermark <= :watermark",
        };
        let result = request
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":watermark", n(record.watermark))
            .send()
            .await;
        match result {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(error) if is_conditional_failure(&error) => Ok(WriteOutcome::Stale),
            Err(error) => Err(backend(error)),
        }
    }

    async fn get_subscription(&self, customer_id: &str, subscription_id: &str) -> Res<Option<SubscriptionRecord>> {
        self.get(customer_pk(customer_id), &format!("SUB#{subscription_id}"))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn subscriptions_of_customer(&self, customer_id: &str) -> Res<Vec<SubscriptionRecord>> {
        self.query_prefix(customer_pk(customer_id), "SUB#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn sample_subscriptions(&self, limit: usize) -> Res<SubscriptionSample> {
        // A scan from a random point of the key space (an `ExclusiveStartKey` that names no
        // item: Scan starts after its hash), wrapping to the start once, until the read budget
        // is spent: `Limit` counts the items read before the filter, so a run costs the budget
        // whatever the table's size, and over runs every part of the table is reached.
        let mut sample = Reservoir::new(limit);
        let budget = sample_read_budget(limit);
        let random_start: Item = [
            ("pk".to_owned(), s(format!("SAMPLE#{:016x}", fastrand::u64(..)))),
            ("sk".to_owned(), s("SAMPLE")),
        ]
        .into_iter()
        .collect();
        let mut seen = std::collections::HashSet::new();
        let mut items_read = 0;
        'passes: for mut start in [Some(random_start), None] {
            loop {
                let left = budget.saturating_sub(items_read);
                if left == 0 {
                    break 'passes;
                }
                // Eventually consistent and filtered server-side: the drift check repairs what
                // it finds, so a record a second old is as good as a fresh one, at half the cost.
                let output = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .limit(i32::try_from(left).unwrap_or(i32::MAX))
                    .filter_expression("begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s("SUB#"))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(backend)?;
                items_read += usize::try_from(output.scanned_count).unwrap_or(left);
                for item in output.items.unwrap_or_default() {
                    let record: SubscriptionRecord = from_item(item)?;
                    // The second pass may reach items the first one read.
                    if seen.insert((record.customer_id.clone(), record.subscription_id.clone())) {
                        sample.offer(record);
                    }
                }
                match output.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
        }
        Ok(SubscriptionSample {
            records: sample.into_items(),
            items_read,
        })
    }

    async fn put_entitlement(&self, entitlement: &Entitlement) -> Res<WriteOutcome> {
        let item = to_item(
            entitlement,
            &[
                ("pk", account_pk(&entitlement.account_id)),
                ("sk", "ENTITLEMENT".into()),
            ],
        )?;
        let previous = entitlement.version.checked_sub(1).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "entitlement of {} written with version 0",
                entitlement.account_id
            ))
        })?;
        // An item from before versioning has no version: it counts as 0.
        let condition = if previous == 0 {
            "attribute_not_exists(#version) OR #version = :previous"
        } else {
            "#version = :previous"
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":previous", n(i64::try_from(previous).unwrap_or(i64::MAX)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(error) if is_conditional_failure(&error) => Ok(WriteOutcome::Stale),
            Err(error) => Err(backend(error)),
        }
    }

    async fn get_entitlement(&self, account: &AccountId) -> Res<Option<Entitlement>> {
        self.get(account_pk(account), "ENTITLEMENT")
            .await?
            .map(from_item)
            .transpose()
    }

    async fn mark_announced(&self, account: &AccountId, version: u64) -> Res<()> {
        let version = n(i64::try_from(version).unwrap_or(i64::MAX));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(account_pk(account)))
            .key("sk", s("ENTITLEMENT"))
            .update_expression("SET #announced = :version")
            .condition_expression("#version = :version")
            .expression_attribute_names("#announced", "announced_version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", version)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // A newer version was written meanwhile: its writer announces it.
            Err(error) if is_conditional_failure(&error) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    async fn claim_event(&self, event_id: &str, now: i64, lease_until: i64) -> Res<LedgerClaim> {
        let token = uuid::Uuid::new_v4().to_string();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(event_pk(event_id)))
            .item("sk", s("LEDGER"))
            .item("ledger_status", s("in_progress"))
            .item("lease_token", s(token.clone()))
            .item("lease_until", n(lease_until))
            .item(
                TTL_ATTRIBUTE,
                n(lease_until.saturating_add(ABANDONED_LEASE_RETENTION_SECS)),
            )
            .condition_expression("attribute_not_exists(pk) OR (ledger_status = :in_progress AND lease_until < :now)")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match result {
            Ok(_) => return Ok(LedgerClaim::Acquired { token }),
            Err(error) => match error.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed) => {
                    match failed.item {
                        Some(item) => item,
                        None => self.get(event_pk(event_id), "LEDGER").await?.unwrap_or_default(),
                    }
                }
                other => return Err(StoreError::Backend(DisplayErrorContext(other).to_string())),
            },
        };
        match ledger_state(&existing) {
            Some(LedgerState::Completed) => Ok(LedgerClaim::Completed),
            Some(LedgerState::InProgress { lease_until }) => Ok(LedgerClaim::Busy { lease_until }),
            None => Err(StoreError::Corrupt(format!(
                "ledger entry for {event_id} has no status"
            ))),
        }
    }

    async fn complete_event(&self, event_id: &str, token: &str, expires_at: i64) -> Res<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(event_pk(event_id)))
            .key("sk", s("LEDGER"))
            .update_expression("SET ledger_status = :completed, expires_at = :expires REMOVE lease_token, lease_until")
            .condition_expression("lease_token = :token")
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":expires", n(expires_at))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(StoreError::LeaseLost(event_id.to_owned())),
            Err(error) => Err(backend(error)),
        }
    }

    async fn release_event(&self, event_id: &str, token: &str) -> Res<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(event_pk(event_id)))
            .key("sk", s("LEDGER"))
            .condition_expression("lease_token = :token")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(StoreError::LeaseLost(event_id.to_owned())),
            Err(error) => Err(backend(error)),
        }
    }

    async fn event_state(&self, event_id: &str) -> Res<Option<LedgerState>> {
        Ok(self
            .get(event_pk(event_id), "LEDGER")
            .await?
            .as_ref()
            .and_then(ledger_state))
    }

    async fn put_dunning(&self, record: &DunningRecord) -> Res<WriteOutcome> {
        let keys = [
            ("pk", customer_pk(&record.customer_id)),
            ("sk", format!("DUNNING#{}", record.invoice_id)),
        ];
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(record, &keys)?));
        if record.stage != DunningStage::Closed {
            request = request
                .condition_expression("attribute_not_exists(pk) OR #stage <> :closed")
                .expression_attribute_names("#stage", "stage")
                .expression_attribute_values(":closed", s("closed"));
        }
        match request.send().await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(error) if is_conditional_failure(&error) => Ok(WriteOutcome::Stale),
            Err(error) => Err(backend(error)),
        }
    }

    async fn get_dunning(&self, customer_id: &str, invoice_id: &str) -> Res<Option<DunningRecord>> {
        self.get(customer_pk(customer_id), &format!("DUNNING#{invoice_id}"))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn dunning_of_customer(&self, customer_id: &str) -> Res<Vec<DunningRecord>> {
        self.query_prefix(customer_pk(customer_id), "DUNNING#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// One `UpdateItem` that sets each attribute the record knows only where it is absent
    /// (`if_not_exists`): concurrent grant and revocation writes both land, in any order.
    async fn put_purchase(&self, record: &PurchaseRecord) -> Res<()> {
        let item = to_item(record, &[])?;
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(customer_pk(&record.customer_id)))
            .key("sk", s(format!("PURCHASE#{}", record.payment_intent_id)));
        let mut sets = Vec::new();
        for (index, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{index} = if_not_exists(#a{index}, :a{index})"));
            request = request
                .expression_attribute_names(format!("#a{index}"), name)
                .expression_attribute_values(format!(":a{index}"), value);
        }
        request
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purchases_of_customer(&self, customer_id: &str) -> Res<Vec<PurchaseRecord>> {
        self.query_prefix(customer_pk(customer_id), "PURCHASE#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn count_request(&self, key: &str, window_start: i64, expires_at: i64) -> Res<u64> {
        // One item per key, not per window: a busy account leaves three small items behind,
        // not one per minute waiting days for TTL. The count goes up in the current window
        // (or a newer one a faster clock opened); an older window's item is reset to 1.
        let (pk, sk) = (s(format!("RATE#{key}")), s("COUNTER"));
        for _ in 0..3 {
            let added = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk.clone())
                .key("sk", sk.clone())
                .update_expression("ADD #count :one SET expires_at = :expires_at")
                .condition_expression("window_start >= :window")
                .expression_attribute_names("#count", "request_count")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":window", n(window_start))
                .expression_attribute_values(":expires_at", n(expires_at))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await;
            match added {
                Ok(output) => {
                    let count = output
                        .attributes
                        .as_ref()
                        .and_then(|item| number_attr(item, "request_count"))
                        .ok_or_else(|| StoreError::Corrupt(format!("request counter {key} has no count")))?;
                    return Ok(u64::try_from(count).unwrap_or(0));
                }
                Err(error) if is_conditional_failure(&error) => {}
                Err(error) => return Err(backend(error)),
            }
            let reset = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk.clone())
                .key("sk", sk.clone())
                .update_expression("SET #count = :one, window_start = :window, expires_at = :expires_at")
                .condition_expression("attribute_not_exists(window_start) OR window_start < :window")
                .expression_attribute_names("#count", "request_count")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":window", n(window_start))
                .expression_attribute_values(":expires_at", n(expires_at))
                .send()
                .await;
            match reset {
                Ok(_) => return Ok(1),
                // Another request opened the window first: count into it.
                Err(error) if is_conditional_failure(&error) => {}
                Err(error) => return Err(backend(error)),
            }
        }
        Err(StoreError::Backend(format!("request counter {key} kept changing")))
    }

    async fn get_cursor(&self, name: &str) -> Res<Option<i64>> {
        Ok(self
            .get(format!("CURSOR#{name}"), "CURSOR")
            .await?
            .and_then(|item| number_attr(&item, "cursor_value")))
    }

    async fn set_cursor(&self, name: &str, expected: Option<i64>, value: i64) -> Res<bool> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CURSOR#{name}")))
            .item("sk", s("CURSOR"))
            .item("cursor_value", n(value));
        let request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(expected) => request
                .condition_expression("cursor_value = :expected")
                .expression_attribute_values(":expected", n(expected)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(error) if is_conditional_failure(&error) => Ok(false),
            Err(error) => Err(backend(error)),
        }
    }
}

fn ledger_state(item: &Item) -> Option<LedgerState> {
    match string_attr(item, "ledger_status")?.as_str() {
        "completed" => Some(LedgerState::Completed),
        "in_progress" => Some(LedgerState::InProgress {
            lease_until: number_attr(item, "lease_until").unwrap_or(0),
        }),
        _ => None,
    }
}

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.as_service_error().and_then(|service| service.code()) == Some("ConditionalCheckFailedException")
}

const PENDING_PREFIX: &str = "pending_";

fn usage_id_pk(identifier: &str) -> String {
    format!("USAGEID#{identifier}")
}

fn counter_sk(meter: &str, period_start: i64) -> String {
    format!("USAGE#{meter}#{period_start:011}")
}

fn float_attr(item: &Item, name: &str) -> Option<f64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

fn usage_counter(item: &Item) -> Res<UsageCounter> {
    let corrupt = || StoreError::Corrupt("a usage counter lacks meter, period_start or used".into());
    let mut pending = std::collections::BTreeMap::new();
    for (name, value) in item {
        if let Some(send) = name.strip_prefix(PENDING_PREFIX) {
            let AttributeValue::M(map) = value else {
                return Err(corrupt());
            };
            let parsed: PendingSend =
                serde_dynamo::from_item(map.clone()).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            pending.insert(send.to_owned(), parsed);
        }
    }
    Ok(UsageCounter {
        meter: string_attr(item, "meter").ok_or_else(corrupt)?,
        period_start: number_attr(item, "period_start").ok_or_else(corrupt)?,
        used: float_attr(item, "used").ok_or_else(corrupt)?,
        events: number_attr(item, "events")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        pending,
    })
}

/// A number as DynamoDB takes it: decimal text, exact for the integers a count holds.
fn float(value: f64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl UsageLedger for DynamoStore {
    async fn recorded(&self, identifiers: &[&str]) -> Res<HashMap<String, RecordedUsage>> {
        let mut found = HashMap::new();
        for chunk in identifiers.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|id| HashMap::from([("pk".to_owned(), s(usage_id_pk(id))), ("sk".to_owned(), s("USAGE"))]))
                .collect();
            // Unprocessed keys (throttling) are asked again, a few times, then it fails.
            for attempt in 0..5 {
                if keys.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|error| StoreError::Backend(error.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in output
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let record = (|| {
                        let pk = string_attr(&item, "pk")?;
                        let identifier = pk.strip_prefix("USAGEID#")?.to_owned();
                        let account = AccountId::parse(&string_attr(&item, "account")?).ok()?;
                        let counter = CounterKey {
                            account,
                            meter: string_attr(&item, "meter")?,
                            period_start: number_attr(&item, "period_start")?,
                        };
                        Some((
                            identifier,
                            RecordedUsage {
                                counter,
                                send: string_attr(&item, "send")?,
                            },
                        ))
                    })();
                    let (identifier, record) =
                        record.ok_or_else(|| StoreError::Corrupt("a usage identifier record is incomplete".into()))?;
                    found.insert(identifier, record);
                }
                keys = output
                    .unprocessed_keys
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
            if !keys.is_empty() {
                return Err(StoreError::Backend(
                    "DynamoDB left usage identifiers unread (throttled)".into(),
                ));
            }
        }
        Ok(found)
    }

    async fn account_usage(&self, account: &AccountId) -> Res<AccountUsage> {
        let mut usage = AccountUsage::default();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk >= :first")
                .expression_attribute_values(":pk", s(account_pk(account)))
                .expression_attribute_values(":first", s("CUSTOMER"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            for item in output.items.unwrap_or_default() {
                match string_attr(&item, "sk").as_deref() {
                    Some("CUSTOMER") => usage.customer_id = string_attr(&item, "customer_id"),
                    Some("ENTITLEMENT") => usage.entitlement = Some(from_item(item)?),
                    Some(sk) if sk.starts_with("USAGE#") => usage.counters.push(usage_counter(&item)?),
                    _ => {}
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(usage),
            }
        }
    }

    async fn commit(&self, commit: &Commit) -> Res<CommitOutcome> {
        let build = |error: aws_sdk_dynamodb::error::BuildError| StoreError::Backend(error.to_string());
        let key = &commit.counter;
        let mut items = Vec::with_capacity(commit.identifiers.len() + 1);
        for (identifier, send) in &commit.identifiers {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(usage_id_pk(identifier)))
                .item("sk", s("USAGE"))
                .item("account", s(key.account.as_str()))
                .item("meter", s(key.meter.clone()))
                .item("period_start", n(key.period_start))
                .item("send", s(send.clone()))
                .item(TTL_ATTRIBUTE, n(commit.identifiers_expire_at))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key("pk", s(account_pk(&key.account)))
            .key("sk", s(counter_sk(&key.meter, key.period_start)))
            .expression_attribute_names("#used", "used")
            .expression_attribute_names("#events", "events")
            .expression_attribute_names("#meter", "meter")
            .expression_attribute_names("#start", "period_start")
            .expression_attribute_names("#expires", TTL_ATTRIBUTE)
            .expression_attribute_values(":amount", float(commit.amount))
            .expression_attribute_values(":events", n(commit.identifiers.len() as i64))
            .expression_attribute_values(":meter", s(key.meter.clone()))
            .expression_attribute_values(":start", n(key.period_start))
            .expression_attribute_values(":expires", n(commit.counter_expires_at));
        let mut sets = vec![
            "#meter = :meter".to_owned(),
            "#start = :start".to_owned(),
            "#expires = :expires".to_owned(),
        ];
        for (index, (send, pending)) in commit.sends.iter().enumerate() {
            let value = serde_dynamo::to_item(pending).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            update = update
                .expression_attribute_names(format!("#p{index}"), format!("{PENDING_PREFIX}{send}"))
                .expression_attribute_values(format!(":p{index}"), AttributeValue::M(value));
            sets.push(format!("#p{index} = :p{index}"));
        }
        let mut removes = Vec::new();
        for (index, expired) in commit.expired.iter().enumerate() {
            update = update.expression_attribute_names(format!("#x{index}"), format!("{PENDING_PREFIX}{expired}"));
            removes.push(format!("#x{index}"));
        }
        let remove = if removes.is_empty() {
            String::new()
        } else {
            format!(" REMOVE {}", removes.join(", "))
        };
        let update = update
            .update_expression(format!(
                "ADD #used :amount, #events :events SET {}{remove}",
                sets.join(", ")
            ))
            .build()
            .map_err(build)?;
        items.push(TransactWriteItem::builder().update(update).build());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(CommitOutcome::Committed),
            Err(error) => {
                let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error()
                else {
                    return Err(backend(error));
                };
                let taken: Vec<String> = cancelled
                    .cancellation_reasons()
                    .iter()
                    .zip(&commit.identifiers)
                    .filter(|(reason, _)| reason.code() == Some("ConditionalCheckFailed"))
                    .map(|(_, (identifier, _))| identifier.clone())
                    .collect();
                if taken.is_empty() {
                    // A concurrent transaction on the same counter: the caller retries.
                    return Err(StoreError::Backend(format!(
                        "usage commit cancelled: {}",
                        DisplayErrorContext(error)
                    )));
                }
                Ok(CommitOutcome::Taken(taken))
            }
        }
    }

    async fn confirm(&self, counter: &CounterKey, sends: &[&str]) -> Res<()> {
        if sends.is_empty() {
            return Ok(());
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(account_pk(&counter.account)))
            .key("sk", s(counter_sk(&counter.meter, counter.period_start)))
            .condition_expression("attribute_exists(pk)");
        let mut removes = Vec::with_capacity(sends.len());
        for (index, send) in sends.iter().enumerate() {
            update = update.expression_attribute_names(format!("#p{index}"), format!("{PENDING_PREFIX}{send}"));
            removes.push(format!("#p{index}"));
        }
        match update
            .update_expression(format!("REMOVE {}", removes.join(", ")))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }
}
